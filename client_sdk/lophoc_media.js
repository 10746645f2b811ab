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
//
// A VideoPeer adds video to the same connection (docs/protocol.md, "Video"):
// a camera line offered `sendonly` from the start, with a track attached by
// `setCamera` whenever the person turns it on, and `videoSlots` `recvonly`
// lines the node fills with what this person may see. On a weak link,
// `setQuality("off")` asks the node to stop the pictures and leave the link
// to audio, `setQuality("low")` asks for the publishers' smaller layer
// where they send one (the camera goes as two simulcast layers from
// 640x360 up), and `setQuality("high")` brings the full pictures back.

import { LophocError } from "./lophoc.js";

/** How long to let ICE gathering run before the offer goes without the rest. */
const GATHER_MS = 2000;

/**
 * The camera as simulcast layers (RFC 8853), lowest first, as the node
 * reads them: a quarter of the width and height for viewers who ask for
 * "low", and the full picture. The node answers which of them it takes.
 */
const CAMERA_LAYERS = [{ rid: "q", scaleResolutionDownBy: 4 }, { rid: "f" }];

/** The least camera size, in pixels, that is sent as two layers (640x360). */
const LAYERED_PIXELS = 640 * 360;

/**
 * A WebRTC audio peer of one person in one room.
 *
 * `slots` is how many speakers it can hear at once; each slot plays through
 * an <audio> element appended to `output` (when given). `microphone: false`
 * makes a peer that only receives. Dispatches `state`
 * (the peer connection's state) and `track` (a slot's MediaStreamTrack).
 */
export class AudioPeer extends EventTarget {
  constructor(client, { room = client.room, slots = 2, output = null, microphone = true } = {}) {
    super();
    this.client = client;
    this.room = room;
    this.slots = Math.max(1, slots);
    this.output = output;
    // A listener with no microphone (a proctor) offers its first line
    // `recvonly`: the node then counts no microphone for it at all.
    this.sends = microphone;
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
    // One transport for every line: the node answers with max-bundle.
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
    this.pc = pc;
    this._addLines(pc);
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

  /** Add the offer's m-lines: the microphone, then the further audio slots. */
  _addLines(pc) {
    const track = this.microphone?.getAudioTracks()[0] ?? null;
    pc.addTransceiver(track ?? "audio", { direction: this.sends ? "sendrecv" : "recvonly" });
    for (let slot = 1; slot < this.slots; slot += 1) {
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
  }

  /** Where the elements of `kind` ("audio" or "video") tracks go. */
  _output(kind) {
    return kind === "audio" ? this.output : null;
  }

  _sendCandidate(message) {
    this.client.request(message, { retries: 1 }).catch(() => {});
  }

  _play(event) {
    const stream = event.streams[0] ?? new MediaStream([event.track]);
    this.dispatchEvent(new CustomEvent("track", { detail: event.track }));
    const kind = event.track.kind;
    const output = this._output(kind);
    if (!output) return;
    const index = this.pc.getTransceivers().indexOf(event.transceiver);
    let element = this.elements[index];
    if (!element) {
      element = document.createElement(kind);
      element.autoplay = true;
      // Video slots are silent pictures; a muted element may autoplay.
      element.muted = kind === "video";
      element.playsInline = true;
      element.dataset.slot = String(index);
      output.append(element);
      this.elements[index] = element;
    }
    element.srcObject = stream;
    // A slot with nothing to carry stays hidden: a remote track is muted
    // until its first packets arrive, and again when they stop.
    const track = event.track;
    element.hidden = track.muted;
    track.onmute = () => { element.hidden = true; };
    track.onunmute = () => { element.hidden = false; };
  }
}

/**
 * Audio and video of one person in one room, on one peer connection.
 *
 * `videoSlots` is how many published tracks it can see at once; each plays
 * in a muted <video> element appended to `videoOutput` (when given). The
 * node forwards the camera only where the person's role and the lesson
 * allow (the host's goes to everyone), whatever the page sends.
 */
export class VideoPeer extends AudioPeer {
  constructor(client, { videoSlots = 1, videoOutput = null, ...options } = {}) {
    super(client, options);
    this.videoSlots = Math.max(0, videoSlots);
    this.videoOutput = videoOutput;
    this.camera = null;
    this.quality = "high";
  }

  /**
   * Ask for `quality` ("high", "low" or "off") on this connection's video
   * slots; resolves with the node's `video_quality_answer` (`requested`,
   * `forwarded`, `layers`). "low" is forwarded as "high" when no
   * publisher this connection sees sends a smaller layer. The choice is
   * kept and asked again after every renegotiation, since a new media
   * connection starts at "high"; before
   * `start` it is only kept (and resolves with `null`). A refused request
   * leaves the previous choice in place.
   */
  async setQuality(quality) {
    const before = this.quality;
    this.quality = quality;
    if (!this.pc) return null;
    try {
      return await this._askQuality();
    } catch (error) {
      this.quality = before;
      throw error;
    }
  }

  _askQuality() {
    return this.client.request({ type: "video_quality", room: this.room, quality: this.quality });
  }

  async _negotiate() {
    await super._negotiate();
    const track = this.camera?.getVideoTracks()[0];
    if (this.pc && track) await this._fitLayers(this._cameraLine(this.pc).sender, track);
    if (this.quality === "high" || !this.pc) return;
    try {
      await this._askQuality();
    } catch (error) {
      // The media is up; only the choice did not reach the node.
      this.dispatchEvent(new CustomEvent("failed", { detail: error }));
    }
  }

  /** Attach a camera stream (or `null` to send nothing) without renegotiating. */
  async setCamera(stream) {
    const track = stream ? stream.getVideoTracks()[0] ?? null : null;
    if (this.camera && this.camera !== stream) {
      for (const old of this.camera.getTracks()) old.stop();
    }
    this.camera = stream;
    if (!this.pc) return;
    const sender = this._cameraLine(this.pc).sender;
    await sender.replaceTrack(track);
    if (track) await this._fitLayers(sender, track);
  }

  /** Close as AudioPeer does, and stop the camera. */
  async stop() {
    await super.stop();
    await this.setCamera(null);
  }

  _addLines(pc) {
    super._addLines(pc);
    const track = this.camera?.getVideoTracks()[0] ?? null;
    const [low, ...others] = CAMERA_LAYERS;
    pc.addTransceiver(track ?? "video", {
      direction: "sendonly",
      sendEncodings: [{ ...low, active: !track || layered(track) }, ...others],
    });
    for (let slot = 0; slot < this.videoSlots; slot += 1) {
      pc.addTransceiver("video", { direction: "recvonly" });
    }
  }

  /**
   * Fit the camera's encodings to what the node took and to the camera.
   * The quarter-size layer goes out only when the camera is large enough
   * to have one: Chrome encodes no more layers than a picture's size
   * allows (two from 640x360 up) and, below that, keeps the smallest and
   * stops the full-size one, so a 320x240 camera would reach everyone at
   * 80x60. A node that took no layers leaves the browser the first
   * encoding alone, the quarter-size one, which then goes back to full size.
   */
  async _fitLayers(sender, track) {
    const parameters = sender.getParameters();
    const encodings = parameters.encodings ?? [];
    if (encodings.length === 1) {
      const [only] = encodings;
      if ((only.scaleResolutionDownBy ?? 1) === 1 && only.active !== false) return;
      only.scaleResolutionDownBy = 1;
      only.active = true;
    } else {
      const low = encodings.find((layer) => layer.rid === CAMERA_LAYERS[0].rid);
      if (!low || low.active === layered(track)) return;
      low.active = layered(track);
    }
    try {
      await sender.setParameters(parameters);
    } catch (error) {
      // The camera goes out all the same, if smaller than it should; the
      // page hears why.
      this.dispatchEvent(new CustomEvent("failed", { detail: error }));
    }
  }

  _output(kind) {
    return kind === "video" ? this.videoOutput : super._output(kind);
  }

  /** The camera's transceiver: the first video line, which only sends. */
  _cameraLine(pc) {
    return pc.getTransceivers().find((line) => line.receiver.track.kind === "video");
  }
}

/** Whether a camera track is large enough to be sent as two layers. */
function layered(track) {
  const { width = 0, height = 0 } = track.getSettings();
  return width * height >= LAYERED_PIXELS;
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
