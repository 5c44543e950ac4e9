import assert from "node:assert/strict";
import { test } from "node:test";

import { preferH264, sessionUrl, WhipError, whipPath } from "../src/whip";

test("whip path escapes each segment of a broadcast name", () => {
  assert.equal(whipPath("live/demo"), "/whip/live/demo");
  assert.equal(whipPath("/a b/c?d/"), "/whip/a%20b/c%3Fd");
});

test("the session URL is the Location, resolved against the request URL", () => {
  assert.equal(sessionUrl("/whip/live/demo/s/42", "http://relay:8080/whip/live/demo"), "http://relay:8080/whip/live/demo/s/42");
  assert.equal(sessionUrl("https://other/s/1", "http://relay:8080/whip/x"), "https://other/s/1");
  assert.throws(() => sessionUrl(null, "http://relay/whip/x"), WhipError);
});

test("H.264 with packetization-mode 1, constrained baseline first, comes ahead of other codecs", () => {
  const codecs = [
    { mimeType: "video/VP8" },
    { mimeType: "video/H264", sdpFmtpLine: "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f" },
    { mimeType: "video/rtx", sdpFmtpLine: "apt=96" },
    { mimeType: "video/H264", sdpFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640034" },
    { mimeType: "video/H264", sdpFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f" },
  ];
  const sorted = preferH264(codecs);
  assert.deepEqual(
    sorted.map((c) => `${c.mimeType} ${c.sdpFmtpLine ?? ""}`.trim()),
    [
      "video/H264 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
      "video/H264 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640034",
      "video/H264 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f",
      "video/VP8",
      "video/rtx apt=96",
    ],
  );
});
