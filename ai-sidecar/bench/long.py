#!/usr/bin/env python3
"""Long recordings for the caption benchmark (docs/BENCHMARKS.md, "Captions: long recordings").

Four scripted programmes, each about two minutes of connected speech by several espeak-ng voices, with
the pauses real speech has: short ones between sentences of one speaker (some shorter than the
sidecar's 500 ms end-of-utterance pause, so sentences run together into long utterances), longer
ones between speakers, and one long turn without a pause worth cutting at. A faint, repeatable
noise floor lies under everything (sox -R), as a microphone's would.

Writes 16 kHz mono 16-bit WAV files and manifest.json in the format of corpus.py (one clip per
recording, its whole reference text):

    {"corpus": "moqcast-captions-long-v2", "sample_rate": 16000, "key": "...", "clips": [
      {"id": "news", "file": "news.wav", "text": "...", "seconds": 171.2, "sha256": "...",
       "turns": [{"voice": "en-us", "start": 1.0, "end": 9.7, "text": "..."}, ...]}, ...]}

Deterministic (no dither, seeded noise) and cached like corpus.py; --force rebuilds.

    python3 ai-sidecar/bench/long.py --out target/bench-captions/long
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

CORPUS = "moqcast-captions-long-v2"
SAMPLE_RATE = 16000
# Noise floor under the whole recording, dBFS-ish (sox synth brownnoise, scaled).
NOISE_GAIN_DB = -56

# (voice, words per minute, [sentences], pause after each sentence in seconds). The pause after a
# turn's last sentence separates speakers. Original text: no digits, few proper names, and no
# words spelt differently in British and American English (the scorer does not map them).
NEWS = [
    ("en-us", 165, [
        "Good evening, and welcome to the evening news.",
        "Tonight we look at the new railway line in the north, the long dry summer on the farms, and a small village that built its own power station.",
        "But first, the weather, which has not been kind to anyone this week.",
    ], [0.45, 0.3, 1.4]),
    ("en+f3", 175, [
        "Thank you.",
        "After the storms at the weekend, the coming days look calmer, with light winds and some sunshine in the south.",
        "In the north, the rain will stay with us until Thursday, and rivers there are still high.",
        "By the weekend, most of the country should be dry, though the nights will be cold.",
    ], [0.35, 0.6, 0.4, 1.6]),
    ("en-us", 165, [
        "Now to the railway.",
        "The new line between the two largest towns in the north opened this morning, three years later than planned.",
        "Our correspondent has been riding on it all day.",
    ], [0.5, 0.7, 1.2]),
    ("en-gb-x-rp", 160, [
        "The first train left the station a little after six, and it was full.",
        "Many passengers told me they had waited years for a faster way to get to work.",
        "The journey that used to take an hour and a half by road now takes about forty minutes.",
        "Not everyone is happy, though.",
        "People living close to the tracks say the trains are loud at night, and they want the company to build walls to keep the noise down.",
        "The company says it is listening, and that it will decide before the end of the year.",
    ], [0.3, 0.55, 0.3, 0.35, 0.45, 1.8]),
    ("en-us", 165, [
        "Thank you.",
        "Farmers in the east say this has been the driest summer they can remember.",
    ], [0.4, 1.3]),
    ("en-us+m3", 170, [
        "We planted the same crops as every year, but without rain most of them never grew above my knee.",
        "We have been carrying water to the animals by hand since July, and the wells are getting lower every week.",
        "If the autumn is dry as well, some of us will have to sell part of the herd.",
    ], [0.5, 0.35, 1.5]),
    ("en-us", 165, [
        "Finally, a village in the hills that decided not to wait for anyone else.",
        "Ten years ago, the people there bought a small hydroelectric turbine together and put it in the stream below the church.",
        "Today it makes more electricity than the village uses, and the rest is sold to the grid.",
        "The money has paid for a new roof on the school and a bus to the nearest town.",
        "That is all from us tonight.",
        "Thank you for watching, and good night.",
    ], [0.3, 0.4, 0.3, 0.6, 0.4, 1.0]),
]

PANEL = [
    ("en-gb-x-rp", 170, [
        "Welcome back to the discussion.",
        "With me in the studio are a teacher from a large school in the city and a doctor who works with young patients.",
        "Let us start with the question everyone is asking.",
        "Are children spending too much time in front of screens?",
    ], [0.4, 0.3, 0.35, 1.2]),
    ("en+f3", 180, [
        "I think the honest answer is that it depends on what they are doing.",
        "A child who writes stories or builds things on a computer is learning.",
        "A child who watches short videos for four hours every evening is not, and we see the difference in the classroom the next morning.",
        "They are tired, they find it hard to listen, and they give up quickly when something is difficult.",
    ], [0.45, 0.3, 0.35, 1.5]),
    ("en-us+m3", 165, [
        "I agree with most of that.",
        "What worries me more is sleep.",
        "Light from a screen late at night tells the brain that it is still day, so children fall asleep later, and they still have to get up early for school.",
        "Over months, that adds up to a lot of lost sleep, and sleep is when the body and the memory repair themselves.",
        "My advice to parents is simple: no screens in the bedroom, and none in the last hour before bed.",
    ], [0.4, 0.3, 0.45, 0.35, 1.7]),
    ("en-gb-x-rp", 170, [
        "That sounds simple, but is it realistic?",
        "Many parents will say that their children need a phone to talk to their friends.",
    ], [0.35, 1.3]),
    ("en+f3", 180, [
        "It is realistic if the whole family does it.",
        "Children copy what they see.",
        "If the parents are on their phones at dinner, no rule will work.",
        "In our school we asked families to try one evening a week without screens, and many of them told us it was the best evening of the week.",
    ], [0.3, 0.4, 0.3, 1.4]),
    ("en-us+m3", 165, [
        "I would add that schools can help by not giving homework that has to be done online late in the evening.",
        "And we as doctors should talk about sleep in every visit, not only when something has already gone wrong.",
    ], [0.45, 1.6]),
    ("en-gb-x-rp", 170, [
        "We will have to leave it there.",
        "Thank you both for coming in, and thank you for listening.",
    ], [0.4, 1.0]),
]

SPORT = [
    ("en-gb-scotland", 175, [
        "Good afternoon, and welcome to the sports desk.",
        "It was a dramatic day at the cup final, where the home side came from two goals down to win in the last minute.",
        "Our reporter was at the ground.",
    ], [0.4, 0.35, 1.3]),
    ("en-us", 185, [
        "What a game.",
        "For an hour the visitors were the better team, and their captain scored twice before the break.",
        "Then the coach made three changes, and everything turned.",
        "The young striker who came on from the bench scored with his first touch, and the crowd never stopped singing after that.",
        "The winner came from a corner in the final minute, a header at the far post that the goalkeeper never saw.",
    ], [0.3, 0.45, 0.35, 0.4, 1.5]),
    ("en-gb-scotland", 175, [
        "And how did the coach explain it afterwards?",
    ], [1.2]),
    ("en-us", 185, [
        "He said he told the players to stop worrying about the score and to enjoy the game.",
        "He also said the supporters won it for them, which is what every coach says, but today it might even be true.",
    ], [0.4, 1.6]),
    ("en+f3", 170, [
        "In tennis, the defending champion is through to the last four after a long match in the heat.",
        "She lost the first set and needed treatment on her shoulder, but she found her rhythm and did not drop her serve again.",
        "She plays the youngest player left in the draw on Friday.",
    ], [0.35, 0.45, 1.4]),
    ("en-gb-scotland", 175, [
        "And finally, the city marathon takes place on Sunday morning.",
        "Roads in the middle of town will be closed from early in the morning until the afternoon, and the police are asking people to use the trains.",
        "That is all the sport for now.",
    ], [0.3, 0.5, 1.0]),
]

SCIENCE = [
    ("en-029", 165, [
        "This is the science hour, and today we are talking about the sea.",
        "Most of our planet is covered by water, yet we know more about the surface of the moon than about the floor of the deep ocean.",
        "My guest has spent the last ten years building robots that dive where no person can go.",
    ], [0.45, 0.35, 1.4]),
    ("en-us+m3", 160, [
        "That is right.",
        "The pressure at the bottom of the deep ocean is enormous, so the robots have no air inside them at all.",
        "Everything is filled with oil, and the cameras sit behind thick glass.",
        "They are slow and patient, and they can stay down for weeks, collecting samples and listening to the animals around them.",
    ], [0.3, 0.4, 0.35, 1.5]),
    ("en-029", 165, [
        "What have they found?",
    ], [1.1]),
    ("en-us+m3", 160, [
        "Life everywhere.",
        "We expected empty mud, and instead we found gardens of sponges, fish without eyes, and tiny animals that glow in the dark to find each other.",
        "Every dive brings back creatures that nobody has named yet.",
        "The hard part is not finding them, it is deciding which ones to study first.",
    ], [0.4, 0.3, 0.45, 1.6]),
    ("en-029", 165, [
        "And what do you hope people take away from your work?",
    ], [1.2]),
    ("en-us+m3", 160, [
        "That the deep ocean is not far away.",
        "What we throw into rivers ends up down there, and the plastic we found in the deepest places came from cities on land.",
        "If we want to protect these gardens, the work starts at home, long before the water reaches the sea.",
    ], [0.35, 0.4, 1.0]),
]

PROGRAMMES = [("news", NEWS), ("panel", PANEL), ("sport", SPORT), ("science", SCIENCE)]
LEAD_S = 1.0


def tool_version(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return (out.stdout or out.stderr).strip().splitlines()[0]


def config_key(espeak, sox):
    blob = json.dumps({"corpus": CORPUS, "programmes": PROGRAMMES, "rate": SAMPLE_RATE,
                       "noise": NOISE_GAIN_DB, "lead": LEAD_S, "espeak": espeak, "sox": sox},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cached(out, key):
    try:
        with open(os.path.join(out, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    if manifest.get("key") != key or len(manifest.get("clips", [])) != len(PROGRAMMES):
        return False
    return all(os.path.isfile(os.path.join(out, c["file"]))
               and sha256(os.path.join(out, c["file"])) == c["sha256"] for c in manifest["clips"])


def seconds(path):
    with wave.open(path, "rb") as w:
        return w.getnframes() / w.getframerate()


def silence(path, secs):
    # -D: sox dithers even silence otherwise, and the files would differ from run to run.
    subprocess.run(["sox", "-D", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", path,
                    "trim", "0", f"{secs:.3f}"], check=True)


def build(name, programme, out, tmp):
    parts, turns, t = [], [], LEAD_S
    lead = os.path.join(tmp, f"{name}-lead.wav")
    silence(lead, LEAD_S)
    parts.append(lead)
    for i, (voice, speed, sentences, pauses) in enumerate(programme):
        assert len(sentences) == len(pauses), (name, i)
        start = t
        for j, (text, pause) in enumerate(zip(sentences, pauses)):
            raw = os.path.join(tmp, f"{name}-{i}-{j}-raw.wav")
            wav = os.path.join(tmp, f"{name}-{i}-{j}.wav")
            gap = os.path.join(tmp, f"{name}-{i}-{j}-gap.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", raw, text], check=True)
            # espeak-ng pads each sentence with some silence of its own; keep it (real pauses vary).
            subprocess.run(["sox", "-D", raw, "-c", "1", "-b", "16", "-e", "signed-integer", wav,
                            "gain", "-2", "rate", str(SAMPLE_RATE)], check=True)
            silence(gap, pause)
            parts += [wav, gap]
            t += seconds(wav) + pause
        turns.append({"voice": voice, "speed": speed, "start": round(start, 3),
                      "end": round(t, 3), "text": " ".join(sentences)})
    speech = os.path.join(tmp, f"{name}-speech.wav")
    subprocess.run(["sox", "-D", *parts, speech], check=True)
    total = seconds(speech)
    noise = os.path.join(tmp, f"{name}-noise.wav")
    subprocess.run(["sox", "-R", "-D", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", noise,
                    "synth", f"{total:.4f}", "brownnoise", "gain", str(NOISE_GAIN_DB)], check=True)
    dest = os.path.join(out, f"{name}.wav")
    subprocess.run(["sox", "-D", "-m", speech, noise, "-b", "16", dest], check=True)
    return {"id": name, "file": f"{name}.wav", "text": " ".join(t["text"] for t in turns),
            "seconds": round(seconds(dest), 3), "sha256": sha256(dest), "turns": turns}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="target/bench-captions/long", help="output folder")
    ap.add_argument("--force", action="store_true", help="rebuild even when the cache is valid")
    args = ap.parse_args()
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"long.py: needs {tool} (apt-get install espeak-ng sox)")
    key = config_key(tool_version(["espeak-ng", "--version"]), tool_version(["sox", "--version"]))
    if not args.force and cached(args.out, key):
        print(f"long: {args.out}/manifest.json is up to date", file=sys.stderr)
        return
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        clips = [build(name, programme, args.out, tmp) for name, programme in PROGRAMMES]
    manifest = {"corpus": CORPUS, "sample_rate": SAMPLE_RATE, "key": key, "clips": clips}
    tmp_manifest = os.path.join(args.out, "manifest.json.tmp")
    with open(tmp_manifest, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    os.replace(tmp_manifest, os.path.join(args.out, "manifest.json"))
    words = sum(len(c["text"].split()) for c in clips)
    total = sum(c["seconds"] for c in clips)
    print(f"long: wrote {len(clips)} recordings, {total:.1f} s, {words} words, to {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
