#!/usr/bin/env python3
"""Fixed English speech corpus for the caption benchmark (docs/BENCHMARKS.md, "Captions").

Speaks 24 known broadcast-style sentences with espeak-ng in five voices, alternating two speeds
so that every voice says every sentence once and each (voice, speed) pair covers 12 sentences
(120 clips, about 7 minutes of audio), converts them with sox to 16 kHz mono 16-bit WAV, and
writes manifest.json:

    {"corpus": "moqcast-captions-v1", "sample_rate": 16000, "key": "...", "clips": [
      {"id": "s01-en-us-150", "file": "clips/s01-en-us-150.wav", "voice": "en-us", "speed": 150,
       "text": "Good evening ...", "seconds": 4.21, "sha256": "..."}, ...]}

File paths are relative to the manifest. Deterministic: the same espeak-ng and sox give the same
bytes (sox dithering is off). Re-running with an unchanged configuration and intact files does
nothing, so the corpus can be cached; --force rebuilds it.

    python3 ai-sidecar/bench/corpus.py --out target/bench-captions/corpus
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave

CORPUS = "moqcast-captions-v1"

# Original sentences, 9-14 words each. No digits, contractions or British/American spelling
# variants, so that the reference needs no normalisation beyond case and punctuation.
SENTENCES = [
    "Good evening and welcome to the late news from our studio in the city.",
    "Heavy rain is expected across the north of the country tomorrow morning.",
    "The council has approved plans for a new bridge over the river.",
    "Thousands of fans gathered outside the stadium before the final match.",
    "Scientists say the warm winter has changed the migration of several birds.",
    "The prime minister will meet business leaders later this week.",
    "Traffic is moving slowly on the main road into town after an accident.",
    "Our reporter spoke to farmers who are worried about the dry summer.",
    "The museum will reopen its doors to visitors next month.",
    "Coming up after the break, a look at the weekend weather.",
    "Shares in technology companies rose sharply at the start of trading.",
    "The hospital says the patient is in a stable condition.",
    "Local schools will close early because of the snow.",
    "Firefighters were called to a warehouse near the old port last night.",
    "The orchestra played to a full house on its opening night.",
    "Police have asked drivers to avoid the area while the road is repaired.",
    "Voters will choose a new mayor at the end of the month.",
    "The airline has grounded dozens of flights because of the strike.",
    "A new study suggests that walking every day can improve your sleep.",
    "The team will travel to Spain for the next round of the cup.",
    "Engineers are still working to restore power to homes in the valley.",
    "The festival brings together musicians from all over the world.",
    "Thank you for watching, and we will see you again tomorrow.",
    "Questions remain about how the project will be paid for.",
]

# espeak-ng voices (check with `espeak-ng --voices=en`; `+f3`/`+m3` are variants from `--voices=variant`).
VOICES = ["en-us", "en", "en-gb-x-rp", "en+f3", "en-us+m3"]
# Words per minute (espeak-ng's default is 175).
SPEEDS = [150, 190]
SAMPLE_RATE = 16000
# sox effects after espeak-ng (22,050 Hz): 2 dB of headroom keeps the resampler from clipping a
# few peaks.
SOX_EFFECTS = ["gain", "-2", "rate", str(SAMPLE_RATE)]


def tool_version(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return (out.stdout or out.stderr).strip().splitlines()[0]


def plan():
    """(id, voice, speed, text) for every clip, in a fixed order."""
    clips = []
    for i, text in enumerate(SENTENCES):
        for j, voice in enumerate(VOICES):
            speed = SPEEDS[(i + j) % len(SPEEDS)]
            slug = voice.replace("+", "-")
            clips.append((f"s{i + 1:02d}-{slug}-{speed}", voice, speed, text))
    return clips


def config_key(espeak, sox):
    blob = json.dumps(
        {"corpus": CORPUS, "sentences": SENTENCES, "voices": VOICES, "speeds": SPEEDS,
         "rate": SAMPLE_RATE, "sox_effects": SOX_EFFECTS, "espeak": espeak, "sox": sox},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cached(out, key):
    """True when out/manifest.json was made with this configuration and every file is intact."""
    path = os.path.join(out, "manifest.json")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    if manifest.get("key") != key or len(manifest.get("clips", [])) != len(plan()):
        return False
    for clip in manifest["clips"]:
        wav = os.path.join(out, clip["file"])
        if not os.path.isfile(wav) or sha256(wav) != clip["sha256"]:
            return False
    return True


def synthesise(voice, speed, text, dest, tmp):
    raw = os.path.join(tmp, "raw.wav")
    # -w writes a complete header (--stdout leaves the length 0).
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", raw, text], check=True)
    # -D: no dither, so the output is bit-exact from run to run.
    subprocess.run(
        ["sox", "-D", raw, "-c", "1", "-b", "16", "-e", "signed-integer", dest, *SOX_EFFECTS],
        check=True,
    )
    with wave.open(dest, "rb") as w:
        assert w.getframerate() == SAMPLE_RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.getnframes() / SAMPLE_RATE


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="target/bench-captions/corpus", help="output folder")
    ap.add_argument("--force", action="store_true", help="rebuild even when the cache is valid")
    args = ap.parse_args()

    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"corpus.py: needs {tool} (apt-get install espeak-ng sox)")
    espeak = tool_version(["espeak-ng", "--version"])
    sox = tool_version(["sox", "--version"])
    key = config_key(espeak, sox)
    out = args.out
    if not args.force and cached(out, key):
        print(f"corpus: {out}/manifest.json is up to date ({len(plan())} clips)", file=sys.stderr)
        return

    clips_dir = os.path.join(out, "clips")
    if os.path.isdir(clips_dir):
        shutil.rmtree(clips_dir)
    os.makedirs(clips_dir)
    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for cid, voice, speed, text in plan():
            rel = f"clips/{cid}.wav"
            dest = os.path.join(out, rel)
            seconds = synthesise(voice, speed, text, dest, tmp)
            clips.append({"id": cid, "file": rel, "voice": voice, "speed": speed, "text": text,
                          "seconds": round(seconds, 4), "sha256": sha256(dest)})
    manifest = {"corpus": CORPUS, "sample_rate": SAMPLE_RATE, "key": key, "espeak": espeak,
                "sox": sox, "clips": clips}
    tmp_manifest = os.path.join(out, "manifest.json.tmp")
    with open(tmp_manifest, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    os.replace(tmp_manifest, os.path.join(out, "manifest.json"))
    total = sum(c["seconds"] for c in clips)
    print(f"corpus: wrote {len(clips)} clips, {total:.1f} s of audio, to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
