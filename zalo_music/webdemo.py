"""`zalo-music demo`: a local Gradio web page, description in, 10-s clip out, for any MusicGen we can load.

Generation goes through the very functions the `generate` command uses (`load_model`, `postprocess`,
`write_mp3`), so a clip heard here is what a submission would contain for the same model and options.

Safety defaults: the server binds 127.0.0.1 (anything else is a conscious `--host` choice, warned about:
the page has no authentication), requests wait in Gradio's queue and run one at a time (the model, its
generation parameters and torch's global RNG are shared state), descriptions are length-limited, the model
picker accepts only the listed models, and audio is written only inside one temporary folder.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from .data.zalo_json import MAX_DESCRIPTION_CHARS
from .decoding import GenerationConfig

#: Hub checkpoints offered in the picker (melody/stereo variants need other conditioning or output paths).
PRETRAINED = ("facebook/musicgen-small", "facebook/musicgen-medium", "facebook/musicgen-large")
#: Longest description accepted: generate's own limit (it truncates beyond; the page asks to shorten instead).
DEFAULT_MAX_CHARS = MAX_DESCRIPTION_CHARS
MAX_DURATION = 30.0  # MusicGen's trained context; longer needs extend_stride windows the CLI does not use
MAX_SEED = 2**31 - 1
#: The controls start at `zalo-music generate`'s defaults (decoding.py declares them).
_DEFAULTS = GenerationConfig()
#: Generated files older than this are removed from the output folder at the next request.
KEEP_SECONDS = 3600

#: Prompts in the training data's own style (MusicCaps-like captions as in the Zalo AI 2023 JSON).
EXAMPLES = (
    "This is an instrumental lo-fi hip hop piece. A mellow electric piano plays jazzy chords over a dusty "
    "drum loop and a soft bass. The atmosphere is calm and nostalgic. The tempo is slow.",
    "This is an instrumental folk music piece. An acoustic guitar strums bright chords while a violin plays "
    "a lively melody. The atmosphere is cheerful and warm. The tempo is medium.",
    "This is an instrumental electronic dance music piece. A punchy four-on-the-floor kick drives a pulsing "
    "synth bass and shimmering arpeggios. The atmosphere is energetic and euphoric. The tempo is fast.",
    "This is an instrumental cinematic piece. Sustained strings and a low brass section build under a slow "
    "piano motif. The atmosphere is dramatic and mysterious.",
    "This is a traditional Vietnamese instrumental piece. A dan bau plays a gliding melody over a gentle "
    "dan tranh accompaniment. The atmosphere is peaceful and sentimental. The tempo is slow.",
)


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine.

    Args:
        host: a bind address or host name (`127.0.0.1`, `::1`, `localhost`, `0.0.0.0`...).
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to a public interface


def list_models(extra: list[str] | tuple[str, ...] = (), dora_dir: str | Path | None = None) -> list[str]:
    """Model choices, most specific first: `extra` (command line), exported folders, XP signatures, hub names.

    Args:
        extra: models named on the command line (kept first, in order; the first one is the default).
        dora_dir: folder holding `exports/` and `xps/` (default: `zalo_music.env.dora_dir()`).
    """
    from . import env

    root = Path(dora_dir) if dora_dir is not None else env.dora_dir()
    found: list[str] = list(extra)
    exports = root / "exports"
    if exports.is_dir():
        # `export_xp` always writes state_dict.bin: other folders there are not loadable models.
        found += sorted(str(p) for p in exports.iterdir() if (p / "state_dict.bin").is_file())
    # Dora has no API that lists XPs (`get_xp_from_sig` recomposes one config per XP, seconds each): list its
    # layout `<dora dir>/xps/<sig>/` (`XP.folder`), which `dora info` and `dora grid` read the same way.
    xps = root / "xps"
    if xps.is_dir():
        found += sorted(f"//sig/{p.parent.name}" for p in xps.glob("*/checkpoint.th"))
    found += PRETRAINED
    return list(dict.fromkeys(found))  # de-duplicated, order kept


def validate_description(text: Any, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The description, stripped, or a ValueError whose message can be shown to the user as is.

    Args:
        text: what the user typed.
        max_chars: longest accepted description (T5 truncates long inputs anyway; this bounds the work).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Please enter a description of the music (e.g. one of the examples).")
    text = text.strip()
    if len(text) > max_chars:
        raise ValueError(f"The description is {len(text)} characters long; the limit is {max_chars}. "
                         "Please shorten it.")
    return text


#: The demo's own caps on what one request may cost, inside the options' valid ranges (decoding.py): name ->
#: (low, high, the sentence a user reads).
_CAPS = {"duration": (0.5, MAX_DURATION, f"Duration must be between 0.5 and {MAX_DURATION:g} seconds."),
         "top_k": (0, 10_000, "Top-k must be between 0 and 10000 (0 disables top-k)."),
         "temperature": (0.0, 10.0, "Temperature must be above 0 and at most 10."),
         "cfg_coef": (0.0, 20.0, "The CFG coefficient must be between 0 and 20."),
         "seed": (0, MAX_SEED, f"The seed must be between 0 and {MAX_SEED}.")}


def _check_options(duration: float, top_k: int, temperature: float, cfg_coef: float, seed: int,
                   fmt: str) -> tuple[float, int, float, float, int, str]:
    """Sampling options coerced and range-checked: the HTTP API bypasses the sliders' limits."""
    from . import decoding

    given = {"duration": duration, "top_k": top_k, "temperature": temperature, "cfg_coef": cfg_coef, "seed": seed}
    values = {}
    for name, value in given.items():
        low, high, sentence = _CAPS[name]
        try:
            values[name] = decoding.check(name, value)  # the same validity as `zalo-music generate`'s flags
        except ValueError:
            raise ValueError(sentence) from None
        if not low <= values[name] <= high:
            raise ValueError(sentence)
    fmt = str(fmt).lower()
    if fmt not in ("mp3", "wav"):
        raise ValueError("The file format must be mp3 or wav.")
    return values["duration"], values["top_k"], values["temperature"], values["cfg_coef"], values["seed"], fmt


class DemoBackend:
    """Model cache and generation behind the page (no Gradio here: unit-testable).

    Args:
        models: models named on the command line (first = default).
        device: torch device (default: cuda if available).
        max_chars: longest accepted description.
        out_dir: folder for generated files (default: a fresh temporary folder).
        sample_rate: output sample rate (the submission's, 32 kHz).
        decoder: token decoding loop (`generate --decoder`).
    """

    def __init__(self, models: list[str] | tuple[str, ...] = (), device: str | None = None,
                 max_chars: int = DEFAULT_MAX_CHARS, out_dir: str | Path | None = None,
                 sample_rate: int = _DEFAULTS.sample_rate, decoder: str = _DEFAULTS.decoder) -> None:
        self.decoder = decoder
        self.extra = list(models)
        self.device = device
        if int(max_chars) < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}")
        self.max_chars = int(max_chars)
        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="zalo-music-demo-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self._models: dict[str, Any] = {}
        # One lock for loading and generating: set_generation_params mutates the model and the seed is
        # torch's global RNG, so two requests may not interleave even with a queue concurrency above 1.
        self._lock = threading.Lock()

    def choices(self) -> list[str]:
        """The models the picker offers (re-listed on each call: new XPs and exports appear)."""
        return list_models(self.extra)

    def get_model(self, spec: str) -> tuple[Any, float]:
        """The MusicGen for `spec`, loaded once and cached, and the seconds spent loading it now.

        Args:
            spec: one of `choices()` (anything else is refused: the picker must not load arbitrary paths).
        """
        if spec in self._models:
            return self._models[spec], 0.0
        if spec not in self.choices():
            raise ValueError(f"Unknown model {spec!r}: pick one from the list.")
        from .generate import load_model

        start = time.perf_counter()
        try:
            model = load_model(spec, self.device)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported to the user, not a crash
            raise ValueError(f"Could not load {spec}: {type(exc).__name__}: {exc}. Hub models need network "
                             "access or a populated Hugging Face cache.") from exc
        self._models[spec] = model
        return model, time.perf_counter() - start

    def _prune(self) -> None:
        """Remove generated files older than KEEP_SECONDS (only our own uuid-named files)."""
        cutoff = time.time() - KEEP_SECONDS
        for p in self.out_dir.glob("demo-*.*"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass  # raced with another cleanup: nothing to do

    def generate(self, text: str, spec: str, duration: float = _DEFAULTS.duration, top_k: int = _DEFAULTS.top_k,
                 temperature: float = _DEFAULTS.temperature, cfg_coef: float = _DEFAULTS.cfg_coef,
                 seed: int = _DEFAULTS.seed, fmt: str = "mp3") -> tuple[Path, dict]:
        """Generate one clip and write it as MP3 or WAV in the output folder.

        Args:
            text: the description.
            spec: model (one of `choices()`).
            duration: seconds of audio.
            top_k: top-k sampling (0: off).
            temperature: softmax temperature.
            cfg_coef: classifier-free guidance coefficient.
            seed: torch seed set right before sampling: same seed and options, same audio.
            fmt: `mp3` or `wav` (16-bit PCM).
        Returns:
            The file and a summary (timings, options).
        """
        import soundfile as sf
        import torch

        from .clips import postprocess, write_mp3
        from .fileio import atomic_path
        from .generate import generate_batch, text_truncator

        text = validate_description(text, self.max_chars)
        duration, top_k, temperature, cfg_coef, seed, fmt = _check_options(
            duration, top_k, temperature, cfg_coef, seed, fmt)
        self._prune()
        with self._lock:
            model, load_s = self.get_model(spec)
            start = time.perf_counter()
            # Same sampling setup as `zalo-music generate` (top_p 0: top-k decides).
            options = GenerationConfig(duration=duration, top_k=top_k, top_p=0.0, temperature=temperature,
                                       cfg_coef=cfg_coef, seed=seed)
            model.set_generation_params(**options.sampling_params())
            torch.manual_seed(seed)
            with torch.inference_mode():
                wav = generate_batch(model, [text_truncator(model)(text)[0]], self.decoder)[0]
            audio = postprocess(wav, model.sample_rate, self.sample_rate, duration)
            gen_s = time.perf_counter() - start
        # uuid names: concurrent users never overwrite each other's file, and nothing user-typed becomes a path
        target = self.out_dir / f"demo-{uuid.uuid4().hex}.{fmt}"
        if fmt == "mp3":
            write_mp3(target, audio, self.sample_rate)
        else:
            with atomic_path(target) as tmp:
                sf.write(str(tmp), audio, self.sample_rate, format="WAV", subtype="PCM_16")
        info = {"model": spec, "seconds": round(gen_s, 2), "load_seconds": round(load_s, 2),
                "duration": duration, "seed": seed, "top_k": top_k, "temperature": temperature,
                "cfg_coef": cfg_coef, "format": fmt, "sample_rate": self.sample_rate}
        return target, info


def format_info(info: dict) -> str:
    """One Markdown line for the page: generation time first, then what produced the clip.

    Args:
        info: the summary returned by `DemoBackend.generate`.
    """
    load = f" (+ {info['load_seconds']:.1f} s loading the model)" if info["load_seconds"] else ""
    return (f"Generated {info['duration']:g} s of audio in **{info['seconds']:.2f} s**{load} — "
            f"`{info['model']}`, seed {info['seed']}, top-k {info['top_k']}, temperature "
            f"{info['temperature']:g}, CFG {info['cfg_coef']:g}, {info['format'].upper()} "
            f"{info['sample_rate']} Hz")


def build_app(models: list[str] | tuple[str, ...] = (), device: str | None = None,
              max_chars: int = DEFAULT_MAX_CHARS, out_dir: str | Path | None = None,
              max_queue: int = 16, backend: DemoBackend | None = None):
    """The Gradio Blocks page (not launched).

    Args:
        models: models named on the command line (first = default choice).
        device: torch device.
        max_chars: longest accepted description.
        out_dir: folder for generated files (default: a fresh temporary folder).
        max_queue: most requests waiting; beyond it users are told the queue is full.
        backend: an existing backend (tests); the other arguments are then ignored.
    Returns:
        The `gradio.Blocks`, with its backend as attribute `zalo_backend`.
    """
    import gradio as gr

    backend = backend or DemoBackend(models, device=device, max_chars=max_chars, out_dir=out_dir)
    choices = backend.choices()

    def on_generate(text, spec, duration, top_k, temperature, cfg_coef, seed, fmt):
        try:
            path, info = backend.generate(text, spec, duration, top_k, temperature, cfg_coef, seed, fmt)
        except ValueError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc
        return str(path), str(path), format_info(info)

    def on_refresh(current):
        fresh = backend.choices()
        return gr.Dropdown(choices=fresh, value=current if current in fresh else fresh[0])

    # delete_cache: Gradio keeps a copy of every returned file; drop those older than an hour.
    with gr.Blocks(title="zalo-music demo", analytics_enabled=False,
                   delete_cache=(KEEP_SECONDS, KEEP_SECONDS)) as app:
        gr.Markdown("## zalo-music — text to music with MusicGen\nDescribe the music in English, in the "
                    "style of the training captions, then press **Generate**.")
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Textbox(label=f"Description (at most {backend.max_chars} characters)", lines=4,
                                  max_lines=12, placeholder=EXAMPLES[0], elem_id="description")
                with gr.Row():
                    model = gr.Dropdown(choices=choices, value=choices[0], label="Model", scale=4,
                                        elem_id="model")
                    refresh = gr.Button("Refresh models", scale=1, size="sm")
                with gr.Row():
                    duration = gr.Slider(0.5, MAX_DURATION, value=_DEFAULTS.duration, step=0.5, label="Duration (s)",
                                         elem_id="duration")
                    seed = gr.Number(value=_DEFAULTS.seed, precision=0, minimum=0, maximum=MAX_SEED, label="Seed",
                                     elem_id="seed")
                with gr.Accordion("Sampling", open=False):
                    top_k = gr.Slider(0, 1000, value=_DEFAULTS.top_k, step=1, label="Top-k (0: off)", elem_id="top_k")
                    temperature = gr.Slider(0.05, 2.0, value=_DEFAULTS.temperature, step=0.05, label="Temperature",
                                            elem_id="temperature")
                    cfg_coef = gr.Slider(0.0, 10.0, value=_DEFAULTS.cfg_coef, step=0.5, label="CFG coefficient",
                                         elem_id="cfg_coef")
                    fmt = gr.Radio(["mp3", "wav"], value="mp3", label="File format", elem_id="format")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                audio = gr.Audio(label="Result", type="filepath", interactive=False, buttons=["download"],
                                 elem_id="audio")
                file = gr.File(label="Download", interactive=False, elem_id="file")
                info = gr.Markdown(elem_id="info")
        gr.Examples(examples=[[e] for e in EXAMPLES], inputs=[text], label="Example descriptions")
        inputs = [text, model, duration, top_k, temperature, cfg_coef, seed, fmt]
        # concurrency_limit=1: the backend serialises anyway; the queue shows users their position.
        button.click(on_generate, inputs, [audio, file, info], concurrency_limit=1, api_name="generate")
        text.submit(on_generate, inputs, [audio, file, info], concurrency_limit=1, api_visibility="private")
        refresh.click(on_refresh, [model], [model], api_visibility="private")
    app.queue(max_size=max_queue, default_concurrency_limit=1)
    app.zalo_backend = backend
    return app


def serve(models: list[str] | tuple[str, ...] = (), host: str = "127.0.0.1", port: int = 7860,
          device: str | None = None, max_chars: int = DEFAULT_MAX_CHARS, share: bool = False,
          out_dir: str | Path | None = None, block: bool = True):
    """Build and launch the page.

    Args:
        models: models named on the command line (first = default choice).
        host: bind address; anything but loopback exposes an unauthenticated page to the network.
        port: TCP port.
        device: torch device.
        max_chars: longest accepted description.
        share: open a public gradio.live tunnel (off by default; needs internet).
        out_dir: folder for generated files (default: a fresh temporary folder).
        block: wait until the server stops (False: return right away, e.g. in tests).
    Returns:
        The launched `gradio.Blocks` (call `.close()` to stop it).
    """
    from .runtime import prepare

    prepare()  # the launcher is an entry point: audiocraft's environment and patches before any model loads
    import gradio as gr

    if not is_loopback(host):
        warnings.warn(f"binding {host}: the demo has no authentication and anyone who can reach this "
                      f"machine on port {port} can use it (and its compute)", stacklevel=2)
    if share:
        warnings.warn("--share opens a public gradio.live link to this machine", stacklevel=2)
    app = build_app(models, device=device, max_chars=max_chars, out_dir=out_dir)
    # System fonts: the default theme fetches Google fonts, which offline machines cannot reach.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
               ssr_mode=False, theme=theme, footer_links=["gradio", "settings"], show_error=True,
               allowed_paths=[str(app.zalo_backend.out_dir)])
    return app


def _cmd_demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a local demo
    serve(models=args.model or (), host=args.host, port=args.port, device=args.device,
          max_chars=args.max_chars, share=args.share, out_dir=args.out_dir)
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `demo` sub-command to the `zalo-music` parser.

    Args:
        subparsers: the object returned by `ArgumentParser.add_subparsers`.
    Returns:
        The new sub-parser.
    """
    from .helpfmt import HelpFormatter

    d = subparsers.add_parser("demo", formatter_class=HelpFormatter,
                              help="local web page: description in, generated clip out (Gradio)")
    d.add_argument("--model", action="append", default=None,
                   help="model to offer first (hub name, exported folder or //sig/<S>); repeatable. Exports "
                        "under <dora_dir>/exports, XPs under <dora_dir>/xps and "
                        f"{', '.join(PRETRAINED)} are always listed (default: the first of those)")
    d.add_argument("--host", default="127.0.0.1",
                   help="bind address; a non-loopback address exposes the page (no authentication)")
    d.add_argument("--port", type=int, default=7860, help="TCP port")
    d.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    d.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS, help="longest accepted description")
    d.add_argument("--share", action="store_true", default=False,
                   help="also open a public gradio.live link (needs internet)")
    d.add_argument("--out-dir", default=None,
                   help="folder for generated files (default: a new temporary folder)")
    d.set_defaults(func=_cmd_demo)
    return d


def main(argv: list[str] | None = None) -> int:
    """`python -m zalo_music.webdemo [options]`: the `demo` sub-command on its own.

    Args:
        argv: command-line arguments (default: sys.argv[1:]).
    """
    parser = argparse.ArgumentParser(prog="zalo-music-demo")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["demo", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
