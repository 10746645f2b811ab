"""Media of lophoc rooms: aiortc peers, speaker forwarding, recording, voice activity.

:mod:`media.relay` is the entry point (:class:`~media.relay.MediaRoom`);
nothing here imports :mod:`server`. Importing this package imports nothing,
so :mod:`media.floor` stays cheap for callers that never touch aiortc.
"""
