// Live audio of a lesson in the browser: one RTCPeerConnection to the node,
// signaled over the lesson's WebSocket (docs/protocol.md, "Media signaling").
//
// The first audio line is the microphone and is offered `sendrecv` from the
// start, with no track: the server counts it as a microphone and decides
// who is heard, and the page attaches a track (`setMicrophone`) only when
// the person may speak. So taking and giving back the floor never
// renegotiates. Further `recvonly` lines are more slots to hear speakers on.
//
//   const audio = new AudioPeer(client, { slots: 2, output: element });
//   await audio.start();
//   await audio.setMicrophone(await navigator.mediaDevices.getUserMedia({audio: true}));

import { LophocError } from "./lophoc.js";

/** How long to let ICE gathering run before the offer goes without the rest. */
const GATHER_MS = 2000;

/**
 * A WebRTC audio peer of one person in one room.
 *
 * `slots` is how many speakers it can hear at once; each slot plays through
 * an <audio> element appended to `output` (when given). Dispatches `state`
 * (the peer connection's state) and `track` (a slot's MediaStreamTrack).
 */
export class AudioPeer extends EventTarget {
  constructor(client, { room = client.room, slots = 2, output = null } = {}) {
    super();
    this.client = client;
    this.room = room;
    this.slots = Math.max(1, slots);
    this.output = output;
    this.pc = null;
    this.microphone = null;
    this.elements = [];
    this._running = false;
    this._undo = [];
  }

  /** The peer connection's state, or "closed" when there is none. */
  get state() {
    return this.pc ? this.pc.connectionState : "closed";
  }

  /** Negotiate with the node; renegotiates by itself after a reconnect. */
  async start() {
    this._running = true;
    // The node closes a person's media with the WebSocket that offered it:
    // a new connection needs a new offer.
    this._undo.push(this.client.on("reconnected", () => this._restart()));
    await this._negotiate();
  }

  /** Attach a microphone stream (or `null` to send nothing) without renegotiating. */
  async setMicrophone(stream) {
    const track = stream ? stream.getAudioTracks()[0] ?? null : null;
    if (this.microphone && this.microphone !== stream) {
      for (const old of this.microphone.getTracks()) old.stop();
    }
    this.microphone = stream;
    const sender = this.pc?.getTransceivers()[0]?.sender;
    if (sender) await sender.replaceTrack(track);
  }

  /** Close the peer connection and tell the node (`media_leave`). */
  async stop() {
    this._running = false;
    for (const undo of this._undo.splice(0)) undo();
    this._closePeer();
    await this.setMicrophone(null);
    try {
      await this.client.request({ type: "media_leave", room: this.room }, { retries: 0 });
    } catch {
      // Leaving is best effort: the node also closes the media with the socket.
    }
  }

  _closePeer() {
    if (this.pc) {
      this.pc.onconnectionstatechange = null;
      this.pc.onicecandidate = null;
      this.pc.close();
      this.pc = null;
    }
  }

  async _restart() {
    if (!this._running) return;
    this._closePeer();
    try {
      await this._negotiate();
    } catch (error) {
      this.dispatchEvent(new CustomEvent("failed", { detail: error }));
    }
  }

  async _negotiate() {
    const iceServers = this.client.hello?.ice_servers ?? [];
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    const track = this.microphone?.getAudioTracks()[0] ?? null;
    pc.addTransceiver(track ?? "audio", { direction: "sendrecv" });
    for (let slot = 1; slot < this.slots; slot += 1) {
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    pc.ontrack = (event) => this._play(event);
    pc.onconnectionstatechange = () => {
      this.dispatchEvent(new CustomEvent("state", { detail: pc.connectionState }));
      // The node does no ICE restart: a failed connection needs a new offer.
      if (pc.connectionState === "failed" && this.pc === pc) this._restart();
    };

    const late = [];
    let answered = false;
    pc.onicecandidate = (event) => {
      const candidate = event.candidate;
      const message = candidate
        ? {
            type: "media_candidate",
            room: this.room,
            candidate: candidate.candidate || null,
            sdp_mid: candidate.sdpMid,
            sdp_mline_index: candidate.sdpMLineIndex,
          }
        : { type: "media_candidate", room: this.room };
      if (answered) this._sendCandidate(message);
      else late.push(message);
    };

    await pc.setLocalDescription(await pc.createOffer());
    // Most candidates make it into the offer itself; the rest trickle.
    await gathered(pc, GATHER_MS);
    const inOffer = pc.localDescription.sdp;
    const reply = await this.client.request({
      type: "media_offer",
      room: this.room,
      sdp: inOffer,
    });
    if (this.pc !== pc) return;
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    answered = true;
    for (const message of late) {
      if (!message.candidate || !inOffer.includes(message.candidate)) {
        this._sendCandidate(message);
      }
    }
  }

  _sendCandidate(message) {
    this.client.request(message, { retries: 1 }).catch(() => {});
  }

  _play(event) {
    const stream = event.streams[0] ?? new MediaStream([event.track]);
    this.dispatchEvent(new CustomEvent("track", { detail: event.track }));
    if (!this.output) return;
    const index = this.pc.getTransceivers().indexOf(event.transceiver);
    let element = this.elements[index];
    if (!element) {
      element = document.createElement("audio");
      element.autoplay = true;
      element.dataset.slot = String(index);
      this.output.append(element);
      this.elements[index] = element;
    }
    element.srcObject = stream;
  }
}

/** Resolves when `pc` has gathered its candidates, or after `limit` ms. */
function gathered(pc, limit) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, limit);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

/**
 * A microphone check: resolves with the loudest level (0 to 1) heard in
 * `ms` milliseconds, calling `onLevel(level)` as it goes.
 */
export async function microphoneLevel(stream, ms, onLevel = () => {}) {
  if (!stream.getAudioTracks().length) throw new LophocError("no microphone track", stream);
  const context = new AudioContext();
  try {
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    let loudest = 0;
    const end = performance.now() + ms;
    while (performance.now() < end) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const sample of samples) peak = Math.max(peak, Math.abs(sample));
      loudest = Math.max(loudest, peak);
      onLevel(peak);
    }
    return loudest;
  } finally {
    await context.close();
  }
}
