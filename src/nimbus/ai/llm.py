"""The optional on-device LLM backend: a `TextGenerator` over llama.cpp (llama-cpp-python) and a GGUF.

Owns: `LlamaCppGenerator`, `GenerationFailed`, `render_chat` (the GGUF chat-template helper) and the
pip line that installs the backend (`PIP_INSTALL`). Rules:
- llama-cpp-python compiles llama.cpp on install and MUST be built portable (`CMAKE_ARGS` below):
  the native build crashes on some CPUs (AMX path). It is optional: nothing imports it until a
  generator is used, and features fall back to their non-LLM path when it is missing or fails.
- The model loads lazily on the first `generate`, once per generator, with `verbose=False`
  (llama.cpp logs only errors). Loading reads a local file; llama.cpp opens no connection.
- Decoding is greedy (temperature 0, top-k 1) with a fixed seed, and the context is reset before
  every call, so the same prompt gives the same text.
- Prompts and outputs are message plaintext: never logged, never put in exception messages or reprs.
- A GGUF that carries `tokenizer.chat_template` gets its prompt wrapped as one user turn (rendered
  with llama-cpp-python's sandboxed Jinja2 formatter); otherwise the prompt is completed as is.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nimbus.types.errors import NimbusError

LLAMA_CPP_VERSION = "0.3.36"
CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
PIP_INSTALL = f'CMAKE_ARGS="{CMAKE_ARGS}" pip install llama-cpp-python=={LLAMA_CPP_VERSION}'


class GenerationFailed(NimbusError):
    """The model could not be loaded or could not generate (the message never holds the prompt)."""


def render_chat(
    template: str, messages: Sequence[dict[str, str]], *, bos: str = "", eos: str = ""
) -> tuple[str, list[str]]:
    """A chat template (Jinja2, as stored in GGUF metadata) applied to `messages`, with the
    generation prompt added: (prompt text, stop strings)."""
    from llama_cpp.llama_chat_format import (  # type: ignore[import-not-found,unused-ignore]
        Jinja2ChatFormatter,
    )

    try:
        chat: Any = [dict(m) for m in messages]  # llama_cpp's TypedDicts of chat messages
        result = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)(messages=chat)
    except Exception as exc:  # a template error (jinja2 raises many kinds): no usable chat format
        raise GenerationFailed(f"the model's chat template does not render: {type(exc).__name__}") from None
    stop = result.stop
    stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if isinstance(s, str)]
    stops = [s for s in stops if s]  # an empty stop string would end every completion at once
    return str(result.prompt), stops


class LlamaCppGenerator:
    """Text generation with llama.cpp from a local GGUF file (see the module docstring)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        seed: int = 0,
        use_chat_template: bool = True,
        name: str | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        self.use_chat_template = use_chat_template
        self.name = name or f"llama.cpp:{self.model_path.parent.name or self.model_path.stem}"
        self._llm: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LlamaCppGenerator(name={self.name!r}, loaded={self.loaded})"

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def _load(self) -> Any:
        if self._llm is None:
            try:
                import llama_cpp  # type: ignore[import-not-found,unused-ignore]
            except ImportError:
                raise GenerationFailed(f"the LLM backend is not installed: {PIP_INSTALL}") from None
            if not self.model_path.is_file():
                raise GenerationFailed(f"{self.model_path}: no such model file")
            try:
                self._llm = llama_cpp.Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    seed=self.seed,
                    n_gpu_layers=0,
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                raise GenerationFailed(f"{self.model_path.name}: llama.cpp cannot load it ({exc})") from None
        return self._llm

    def chat_template(self) -> str | None:
        """The GGUF's chat template (loads the model), or None."""
        template = self._load().metadata.get("tokenizer.chat_template")
        return template if isinstance(template, str) and template.strip() else None

    def _special(self, llm: Any, token: int) -> str:
        try:
            return str(llm._model.token_get_text(token)) if token >= 0 else ""
        except Exception:  # an accessor that moved between versions: the template renders without
            return ""

    def _tokens(self, llm: Any, prompt: str) -> tuple[list[int], list[str]]:
        template = self.chat_template() if self.use_chat_template else None
        if template is None:
            return list(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)), []
        text, stops = render_chat(
            template,
            [{"role": "user", "content": prompt}],
            bos=self._special(llm, llm.token_bos()),
            eos=self._special(llm, llm.token_eos()),
        )
        return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)), stops

    def generate(self, prompt: str, *, max_tokens: int = 128) -> str:
        """The model's continuation of `prompt` (greedy, at most `max_tokens` tokens), stripped.
        Raises `GenerationFailed` when the model cannot load or the prompt does not fit."""
        with self._lock:
            llm = self._load()
            tokens, stops = self._tokens(llm, prompt)
            n_ctx = int(llm.n_ctx())  # llama.cpp may round the requested size up
            budget = min(max_tokens, n_ctx - len(tokens))
            if budget < 1:
                raise GenerationFailed(
                    f"the prompt ({len(tokens)} tokens) does not fit the context ({n_ctx})"
                )
            llm.reset()  # no prefix reuse between calls: the same prompt gives the same text
            try:
                out = llm.create_completion(
                    tokens,
                    max_tokens=budget,
                    temperature=0.0,
                    top_k=1,
                    top_p=1.0,
                    min_p=0.0,
                    repeat_penalty=1.0,
                    seed=self.seed,
                    stop=stops or None,
                )
            except (ValueError, RuntimeError) as exc:
                raise GenerationFailed(f"generation failed: {type(exc).__name__}") from None
        text = out["choices"][0]["text"] if isinstance(out, dict) else ""
        return text.strip() if isinstance(text, str) else ""

    def close(self) -> None:
        """Free the model (it loads again on the next `generate`)."""
        with self._lock:
            llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()
