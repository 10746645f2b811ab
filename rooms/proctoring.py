"""Proctoring signals: what becomes an incident, and how serious it is.

Two sources feed an exam room's incidents. A student's exam page reports
what it notices (:class:`ClientSignal`: the tab hidden, fullscreen left,
a paste, a second screen, no face or several in front of the camera); the
server notices what no page can hide (a disconnect and a return, a second
connection of the same student, a new network address, answers coming
faster than anyone could read the items, voice on the student's microphone
while no spoken answer is being recorded). Nothing here does I/O: the exam
room asks these functions and logs what they return.

A client's signal is a claim by software the student controls, so it is
never trusted to clear anyone, only to draw a proctor's eye; the server's
own signals are facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from client_sdk.protocol import ClientSignal, IncidentKind, Severity

#: How serious each kind of incident is, as a proctor first sees it.
SEVERITY: dict[IncidentKind, Severity] = {
    IncidentKind.PAGE_HIDDEN: Severity.MEDIUM,
    IncidentKind.WINDOW_BLUR: Severity.LOW,
    IncidentKind.FULLSCREEN_LEFT: Severity.MEDIUM,
    IncidentKind.COPY: Severity.MEDIUM,
    IncidentKind.PASTE: Severity.HIGH,
    IncidentKind.SECOND_SCREEN: Severity.HIGH,
    IncidentKind.DEVTOOLS: Severity.HIGH,
    IncidentKind.FACE_MISSING: Severity.MEDIUM,
    IncidentKind.FACES_SEVERAL: Severity.HIGH,
    IncidentKind.DISCONNECTED: Severity.LOW,
    IncidentKind.RECONNECTED: Severity.INFO,
    IncidentKind.SECOND_CONNECTION: Severity.HIGH,
    IncidentKind.ADDRESS_CHANGED: Severity.MEDIUM,
    IncidentKind.TOO_FAST: Severity.MEDIUM,
    IncidentKind.VOICE_ON_SILENT_ITEM: Severity.MEDIUM,
}
#: A blur or hidden page this many times is worth more than the first one.
REPEATS_RAISE = 3
#: The fastest a person reads an item: per word of its prompt and options,
#: and at least this long for any item (600 words a minute is skimming).
MS_PER_WORD = 100
MIN_ITEM_MS = 1500
#: Answers between two ``too_fast`` incidents of one student, so a fast
#: student is reported once per stretch, not at every answer.
TOO_FAST_EVERY = 10


@dataclass(frozen=True, slots=True)
class Signal:
    """An incident to log: its kind, severity and a short detail."""

    kind: IncidentKind
    severity: Severity
    detail: str = ""


def from_client(signal: ClientSignal, detail: str, seen_before: int) -> Signal:
    """The incident of a page's signal; ``seen_before`` of the same kind."""
    kind = signal
    severity = SEVERITY[kind]
    if seen_before + 1 >= REPEATS_RAISE and severity in (Severity.LOW, Severity.MEDIUM):
        # A student who keeps leaving the page is more than a stray click.
        severity = Severity.HIGH if severity is Severity.MEDIUM else Severity.MEDIUM
    return Signal(kind, severity, detail[:200])


#: How long two connections of one student must stay open together before
#: they count as a second connection. A page that reconnects after a drop
#: often opens its new connection before the server has seen the old one
#: close; that is a reconnect, not a second device.
SECOND_CONNECTION_GRACE_MS = 3000


def second_connection(connections: int) -> Signal:
    """The incident of a student with ``connections`` open at once."""
    return Signal(
        IncidentKind.SECOND_CONNECTION,
        SEVERITY[IncidentKind.SECOND_CONNECTION],
        f"{connections} connections at once",
    )


def replaced() -> Signal:
    """The incident of a dropped connection that a newer one replaced."""
    return Signal(
        IncidentKind.RECONNECTED,
        SEVERITY[IncidentKind.RECONNECTED],
        "the old connection closed after the new one opened",
    )


def on_join(
    connections_before: int, was_away: bool, address: str, last_address: str | None
) -> list[Signal]:
    """Incidents of a student's connection opening, known at once.

    A connection opened while another is open is judged later: see
    :data:`SECOND_CONNECTION_GRACE_MS`.
    """
    found: list[Signal] = []
    if connections_before == 0 and was_away:
        found.append(
            Signal(IncidentKind.RECONNECTED, SEVERITY[IncidentKind.RECONNECTED])
        )
    if address and last_address and address != last_address:
        found.append(
            Signal(
                IncidentKind.ADDRESS_CHANGED,
                SEVERITY[IncidentKind.ADDRESS_CHANGED],
                f"{last_address} -> {address}",
            )
        )
    return found


def on_leave(connections_left: int) -> list[Signal]:
    """Incidents of a student's connection closing (not by their choice)."""
    if connections_left:
        return []
    return [Signal(IncidentKind.DISCONNECTED, SEVERITY[IncidentKind.DISCONNECTED])]


def reading_ms(words: int) -> int:
    """The least time a person needs to read an item of ``words`` words."""
    return max(words * MS_PER_WORD, MIN_ITEM_MS)


def too_fast(
    elapsed_ms: int, read_ms: int, answered: int, reported_at: int
) -> Signal | None:
    """An incident when ``answered`` items came in less than ``read_ms``.

    ``elapsed_ms`` is the time since the attempt started, ``read_ms`` the
    least time needed to read the answered items, ``reported_at`` the
    number of answers at the student's last ``too_fast`` incident (0 if
    none).
    """
    if elapsed_ms >= read_ms:
        return None
    if reported_at and answered - reported_at < TOO_FAST_EVERY:
        return None
    return Signal(
        IncidentKind.TOO_FAST,
        SEVERITY[IncidentKind.TOO_FAST],
        f"{answered} items in {elapsed_ms} ms; reading them takes {read_ms} ms",
    )


#: Voice on a student's microphone while no spoken answer of theirs is
#: recorded becomes an incident once it adds up to this much within the
#: window: a cough or a word to oneself is not worth a proctor's look.
VOICE_MIN_MS = 2000
VOICE_WINDOW_MS = 10_000
#: At most one such incident per student this often: the proctor was told,
#: and can listen in (``listen``) rather than read a stream of them.
VOICE_EVERY_MS = 30_000


def voice_on_silent_item(
    voiced_ms: int, window_ms: int, since_last_ms: int | None
) -> Signal | None:
    """An incident for ``voiced_ms`` of voice heard within ``window_ms``.

    ``since_last_ms`` is the time since the student's last incident of this
    kind (None if none). The media node measures; the room decides here,
    so the limits hold whichever node measured.
    """
    if voiced_ms < VOICE_MIN_MS or window_ms > VOICE_WINDOW_MS:
        return None
    if since_last_ms is not None and since_last_ms < VOICE_EVERY_MS:
        return None
    return Signal(
        IncidentKind.VOICE_ON_SILENT_ITEM,
        SEVERITY[IncidentKind.VOICE_ON_SILENT_ITEM],
        f"{voiced_ms / 1000:.1f} s of voice within {window_ms / 1000:.0f} s",
    )
