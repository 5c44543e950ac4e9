#!/usr/bin/env python3
"""Word error rate and real-time factor for the caption benchmark.

Reads the corpus manifest (reference texts) and JSON lines from moqcast-caption-bench and
faster_whisper_ref.py (one object per clip and configuration: system, config, threads, id,
audio_s, proc_s, text) and prints markdown tables:

- per system and configuration: WER %, real-time factor (total processing wall s / total audio s),
  CPU seconds (user + system, all threads) per audio second, audio seconds, threads, passes;
- WER % by voice and speed for each configuration;
- for systems that report them (moqcast-sidecar): mean mel / encode / decode seconds per clip;
- with --diff, the clips where two configurations' normalised transcripts differ.

A configuration may come in several passes (several files, or --repeat in the runners): each
clip's fastest pass counts, and its transcript must be the same in every pass.

WER is word-level Levenshtein distance: total edits over all clips / total reference words, after
a Whisper-style English normalisation of both sides (lowercase, bracketed asides and filler words
dropped, common contractions expanded, hyphens split, punctuation removed, numbers 0-99 spelled
out, whitespace collapsed).

    python3 ai-sidecar/bench/score.py --manifest target/bench-captions/corpus/manifest.json \\
        target/bench-captions/sidecar-beam1.jsonl target/bench-captions/faster-whisper.jsonl
"""

import argparse
import json
import re
import sys
from collections import OrderedDict, defaultdict

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
FILLERS = {"hmm", "mm", "mhm", "mmm", "uh", "um", "ah", "er", "eh"}
CONTRACTIONS = [
    (r"\bwon't\b", "will not"),
    (r"\bcan't\b", "can not"),
    (r"\bcannot\b", "can not"),
    (r"\blet's\b", "let us"),
    (r"n't\b", " not"),
    (r"'re\b", " are"),
    (r"'ll\b", " will"),
    (r"'ve\b", " have"),
    (r"'m\b", " am"),
    (r"'d\b", " would"),
]


def number_words(n):
    if n < 20:
        return ONES[n]
    tens, ones = divmod(n, 10)
    return TENS[tens] + ("" if ones == 0 else " " + ONES[ones])


def normalise(text):
    s = text.lower()
    s = re.sub(r"[<\[][^>\]]*[>\]]", " ", s)  # [music], <|tokens|>
    s = re.sub(r"\([^)]*\)", " ", s)  # (applause)
    s = s.replace("\u2019", "'")
    for pattern, repl in CONTRACTIONS:
        s = re.sub(pattern, repl, s)
    s = re.sub(r"(?<=\d),(?=\d{3})", "", s)  # 1,000 -> 1000
    s = re.sub(r"[^\w\s']|_", " ", s)  # punctuation and hyphens -> space
    s = s.replace("'", "")  # possessives: "city's" -> "citys" on both sides
    s = re.sub(r"\b\d{1,2}\b", lambda m: number_words(int(m.group())), s)
    return [w for w in s.split() if w not in FILLERS]


def normalise_plain(text):
    """Language-neutral normalisation (for Spanish and other non-English text): lowercase,
    bracketed asides dropped, punctuation (including inverted marks) removed, accents kept."""
    s = text.lower()
    s = re.sub(r"[<\[][^>\]]*[>\]]", " ", s)
    s = re.sub(r"\([^)]*\)", " ", s)
    s = re.sub(r"[^\w\s]|_", " ", s)
    return s.split()


def edit_distance(ref, hyp):
    """Levenshtein distance between two word lists (substitutions, deletions, insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


class Tally:
    def __init__(self):
        self.edits = self.words = self.clips = 0
        self.audio = self.proc = self.cpu = 0.0
        self.parts = defaultdict(float)  # mel_s, encode_s, decode_s
        self.threads = set()
        self.passes = set()

    def add(self, edits, words, row):
        self.edits += edits
        self.words += words
        self.clips += 1
        self.audio += row["audio_s"]
        self.proc += row["proc_s"]
        self.cpu += row.get("cpu_s", float("nan"))
        self.threads.add(row.get("threads"))
        self.passes.add(row.get("passes", 1))
        for part in ("mel_s", "encode_s", "decode_s", "tokens"):
            if part in row:
                self.parts[part] += row[part]

    @property
    def wer(self):
        return 100.0 * self.edits / max(self.words, 1)


def table(header, rows, left=1):
    """Markdown table; the first `left` columns are text (left-aligned), the rest numbers."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("results", nargs="+", help="JSON lines files")
    ap.add_argument("--md", help="also write the tables to this markdown file")
    ap.add_argument("--pair-diffs", action="store_true",
                    help="also list the clips where moqcast-sidecar over the full 30 s window and "
                         "faster-whisper float32 at the same beam size differ")
    ap.add_argument("--diff", nargs=2, metavar=("A", "B"), action="append", default=[],
                    help='list clips where two configurations differ, each "SYSTEM/CONFIG", '
                         'e.g. "moqcast-sidecar/float32 beam 1" "faster-whisper/float32 beam 1"')
    args = ap.parse_args()

    with open(args.manifest) as f:
        clips = {c["id"]: c for c in json.load(f)["clips"]}
    refs = {cid: normalise(c["text"]) for cid, c in clips.items()}

    totals = OrderedDict()
    by_group = defaultdict(Tally)  # (system/config, voice, speed)
    texts = defaultdict(dict)  # system/config -> id -> raw text
    runs = {}  # system/config -> id -> fastest row so far
    meta = {}  # system/config -> its first row
    for path in args.results:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                cid = row["id"]
                if cid not in refs:
                    sys.exit(f"score.py: {path}: clip {cid!r} is not in the manifest")
                key = f"{row['system']}/{row['config']}"
                meta.setdefault(key, row)
                seen = runs.setdefault(key, {}).get(cid)
                if seen is None:
                    runs[key][cid] = row
                    continue
                if seen["text"] != row["text"]:
                    sys.exit(f"score.py: {key} {cid}: the transcript changed between passes: "
                             f"{seen['text']!r}, {row['text']!r}")
                row["passes"] = row.get("passes", 1) + seen.get("passes", 1)
                if row["proc_s"] >= seen["proc_s"]:
                    row = dict(seen, passes=row["passes"])
                runs[key][cid] = row

    # Several passes of one configuration (files or --repeat): each clip's fastest.
    for key, rows in runs.items():
        for cid, row in rows.items():
            texts[key][cid] = row["text"]
            ref = refs[cid]
            edits = edit_distance(ref, normalise(row["text"]))
            totals.setdefault(key, Tally()).add(edits, len(ref), row)
            clip = clips[cid]
            # Long recordings (long.py) have several voices: grouped by recording instead.
            group = (clip.get("voice", clip["id"]), clip.get("speed", ""))
            by_group[(key, *group)].add(edits, len(ref), row)

    out = []
    rows = []
    for key, t in totals.items():
        system, config = key.split("/", 1)
        rows.append([system, config, t.clips, f"{t.wer:.1f}", f"{t.proc / t.audio:.3f}",
                     f"{t.cpu / t.audio:.3f}", f"{t.audio:.1f}", f"{t.proc:.1f}",
                     ",".join(str(x) for x in sorted(t.threads, key=str)),
                     ",".join(str(x) for x in sorted(t.passes))])
    out.append(table(["system", "config", "clips", "WER %", "RTF", "CPU s / audio s", "audio s",
                      "proc s", "threads", "passes"], rows, left=2))

    groups = sorted({(v, s) for (_, v, s) in by_group}, key=str)
    rows = []
    for key in totals:
        row = [key]
        for v, s in groups:
            t = by_group.get((key, v, s))
            row.append(f"{t.wer:.1f}" if t else "")
        rows.append(row)
    out.append("WER % by voice and speed (words per minute):\n\n"
               + table(["system/config"] + [f"{v} {s}" for v, s in groups], rows))

    rows = []
    for key, t in totals.items():
        if "encode_s" in t.parts:
            n = t.clips
            rows.append([key, f"{t.parts['mel_s'] / n:.3f}", f"{t.parts['encode_s'] / n:.3f}",
                         f"{t.parts['decode_s'] / n:.3f}", f"{t.parts['tokens'] / n:.1f}",
                         f"{1000 * t.parts['decode_s'] / max(t.parts['tokens'], 1):.1f}"])
    if rows:
        out.append("Mean seconds per clip:\n\n" + table(
            ["system/config", "mel s", "encode s", "decode s", "tokens", "decode ms/token"], rows))

    if args.pair_diffs:
        for a, ra in meta.items():
            for b, rb in meta.items():
                if (ra["system"] == "moqcast-sidecar" and ra.get("window") == "full"
                        and rb["system"] == "faster-whisper" and rb.get("compute") == "float32"
                        and ra["beam"] == rb["beam"] and [a, b] not in args.diff):
                    args.diff.append([a, b])
    for a, b in args.diff:
        if a not in texts or b not in texts:
            continue
        rows = []
        for cid in clips:
            ta, tb = texts[a].get(cid), texts[b].get(cid)
            if ta is None or tb is None or normalise(ta) == normalise(tb):
                continue
            rows.append([cid, clips[cid]["text"], ta, tb])
        same = sum(1 for cid in clips if cid in texts[a] and cid in texts[b]) - len(rows)
        head = (f"Clips where `{a}` and `{b}` differ after normalisation "
                f"({len(rows)} differ, {same} agree)")
        out.append(head + (":\n\n" + table(["clip", "reference", a, b], rows, left=4)
                           if rows else "."))

    text = "\n\n".join(out) + "\n"
    sys.stdout.write(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
