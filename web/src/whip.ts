// A WHIP client (RFC 9725): publishes a MediaStream to `POST /whip/<broadcast>` of a relay.
// One offer with every ICE candidate gathered (no trickle), H.264 preferred for video (the
// relay passes it to MoQ viewers as it is), Opus for audio; `DELETE` on the session's Location
// ends the publication.

/** Why a WHIP request failed: the HTTP status and the server's reason (its body). */
export class WhipError extends Error {
  constructor(
    readonly status: number,
    reason: string,
  ) {
    super(status === 0 ? reason : `${status}: ${reason}`);
  }
}

/** `/whip/<broadcast>` with each path segment escaped (a broadcast name may contain `/`). */
export function whipPath(broadcast: string): string {
  return "/whip/" + broadcast.split("/").filter(Boolean).map(encodeURIComponent).join("/");
}

/** The session resource from a 201's `Location` (relative to the request URL, RFC 9725 §4.2). */
export function sessionUrl(location: string | null, requestUrl: string): string {
  if (!location) throw new WhipError(201, "the answer has no Location header");
  return new URL(location, requestUrl).toString();
}

/** Codecs with H.264 (packetization-mode 1, constrained baseline first) ahead of the rest. */
export function preferH264<T extends { mimeType: string; sdpFmtpLine?: string }>(codecs: T[]): T[] {
  const rank = (c: T): number => {
    if (c.mimeType.toLowerCase() !== "video/h264") return 2;
    const fmtp = c.sdpFmtpLine ?? "";
    if (!fmtp.includes("packetization-mode=1")) return 1.5;
    return fmtp.includes("profile-level-id=42e0") ? 0 : 1;
  };
  return codecs.map((c, i) => ({ c, i })).sort((a, b) => rank(a.c) - rank(b.c) || a.i - b.i).map((x) => x.c);
}

function gathered(pc: RTCPeerConnection, timeoutMs: number): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    // Whatever was gathered by then is offered (host candidates come at once).
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

export interface WhipOptions {
  /** The relay's HTTP origin, e.g. `http://localhost:8080` (default: this page's). */
  origin?: string;
  /** Bearer token with the right to publish the broadcast. */
  token?: string;
  /** Called when the connection's state changes. */
  onState?: (state: RTCPeerConnectionState) => void;
}

export class WhipPublisher {
  readonly pc: RTCPeerConnection;
  #session: string | null = null;
  #token?: string;

  private constructor(pc: RTCPeerConnection, token?: string) {
    this.pc = pc;
    this.#token = token;
  }

  /** Offers `stream` to the relay as `broadcast`; resolves once the answer is applied. */
  static async publish(stream: MediaStream, broadcast: string, opts: WhipOptions = {}): Promise<WhipPublisher> {
    const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    const self = new WhipPublisher(pc, opts.token);
    if (opts.onState) {
      const on = opts.onState;
      pc.addEventListener("connectionstatechange", () => on(pc.connectionState));
    }
    try {
      for (const track of stream.getTracks()) {
        const t = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
        if (track.kind === "video" && "setCodecPreferences" in t) {
          const caps = RTCRtpSender.getCapabilities("video");
          if (caps) t.setCodecPreferences(preferH264(caps.codecs));
        }
      }
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, 2000);
      const url = new URL(whipPath(broadcast), opts.origin ?? location.origin).toString();
      const headers: Record<string, string> = { "Content-Type": "application/sdp" };
      if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
      const res = await fetch(url, { method: "POST", headers, body: pc.localDescription?.sdp ?? "" });
      const body = await res.text();
      if (res.status !== 201) throw new WhipError(res.status, body.trim() || res.statusText);
      self.#session = sessionUrl(res.headers.get("Location"), res.url || url);
      await pc.setRemoteDescription({ type: "answer", sdp: body });
      return self;
    } catch (e) {
      pc.close();
      throw e;
    }
  }

  /** Ends the publication (`DELETE` on the session) and closes the connection. */
  async stop(): Promise<void> {
    const session = this.#session;
    this.#session = null;
    this.pc.close();
    if (!session) return;
    const headers: Record<string, string> = {};
    if (this.#token) headers.Authorization = `Bearer ${this.#token}`;
    await fetch(session, { method: "DELETE", headers }).catch(() => undefined);
  }

  /** Bytes and frames sent so far, from the outbound RTP statistics. */
  async sent(): Promise<{ bytes: number; videoFrames: number; audioPackets: number }> {
    let bytes = 0;
    let videoFrames = 0;
    let audioPackets = 0;
    (await this.pc.getStats()).forEach((s) => {
      if (s.type !== "outbound-rtp") return;
      bytes += s.bytesSent ?? 0;
      if (s.kind === "video") videoFrames += s.framesEncoded ?? 0;
      else audioPackets += s.packetsSent ?? 0;
    });
    return { bytes, videoFrames, audioPackets };
  }
}
