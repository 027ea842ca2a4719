"""The one entry point the CLI, the app and the Python API share: analyze → report → ask.

``Pipeline.from_config(cfg)`` is instant; heavy parts (region segmentation, the CT model, the LLM, the knowledge store)
load on first use. Each part may fail to load — the pipeline then degrades and says so (``Study.warnings``,
``Report.notices``/``Report.guard``) instead of failing: without the model the report comes from measurements only,
without the store recommendations carry a built-in citation and free answers carry no passages.

Example::

    from chatapp.pipeline import Pipeline
    pipe = Pipeline.from_config()
    study = pipe.analyze("chest.nii.gz")
    print(pipe.report(study).to_text())
    print(pipe.ask(study, "How big is the nodule?").text)
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from chatapp import compose, guard, prompts, vqa
from chatapp.report import (
    FindingCall,
    build_structured_report,
    call_findings,
    nodule_diameter,
    nodule_mask,
    report_settings,
    supported_findings,
)
from chatapp.schema import DEMO_WEIGHTS_NOTICE, Answer, Citation, Evidence, Report, Sentence, Study

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

_UNSET: Any = object()

# Used only when the knowledge store cannot be opened: the recommendation still names its source.
FLEISCHNER_FALLBACK = Citation(
    n=1, key="fleischner-2017", title="Guidelines for Management of Incidental Pulmonary Nodules Detected on CT "
    "Images: From the Fleischner Society 2017", source="MacMahon H. et al., Radiology 2017;284(1):228-243",
    url="https://doi.org/10.1148/radiol.2017161659")


def fleischner_advice(diameter_mm: float, multiple: bool) -> tuple[str, str]:
    """Fleischner Society 2017 follow-up for incidental solid nodules in adults >= 35 years.

    Args:
        diameter_mm: nodule size (mean of long and short axis), rounded to the nearest mm before categorising.
        multiple: whether more than one nodule >= 3 mm was measured (then the largest decides).

    Returns:
        (size category text, follow-up advice by risk).
    """
    d = round(diameter_mm)
    kind = "multiple solid nodules" if multiple else "a single solid nodule"
    if d < 6:
        return (f"{kind} smaller than 6 mm", ("no routine follow-up for low-risk patients; optional CT at 12 months "
                                             "for high-risk patients"))
    if d <= 8:
        if multiple:
            return (f"{kind} of 6 to 8 mm", "CT at 3 to 6 months, then consider CT at 18 to 24 months")
        return (f"{kind} of 6 to 8 mm", ("CT at 6 to 12 months, then consider CT at 18 to 24 months (low risk) "
                                                 "or CT at 18 to 24 months (high risk)"))
    if multiple:
        return (f"{kind} larger than 8 mm", "CT at 3 to 6 months, then consider CT at 18 to 24 months")
    return (f"{kind} larger than 8 mm", "consider CT at 3 months, PET/CT, or tissue sampling")



_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def repeat_cut(text: str, min_chars: int = 12) -> int | None:
    """Where ``text`` starts repeating a complete sentence it already said (character offset), else ``None``.

    Only complete sentences (followed by whitespace or a newline) of at least ``min_chars`` characters count, compared
    case- and space-insensitively; the final, possibly unfinished, fragment is ignored. The chat uses it to end a
    greedy small-LLM answer that has started to loop ("X is Y. X is Y. X is Y. ...").
    """
    seen: set[str] = set()
    start = 0
    for m in _SENTENCE_END.finditer(text):
        sent = " ".join(text[start:m.start()].split()).lower()
        if len(sent) >= min_chars:
            if sent in seen:
                return start
            seen.add(sent)
        start = m.end()
    return None


def _file_digest(path: Any) -> str | None:
    """sha256 of a regular file's bytes (None for folders and anything unreadable): the re-analysis fast path."""
    import hashlib

    try:
        p = Path(os.fspath(path))
        if not p.is_file():
            return None
        with open(p, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except (OSError, TypeError, ValueError):
        return None

class Pipeline:
    """Analyze a CT, draft its region-grounded report, and answer questions about it.

    Args:
        config: a ``chatapp.config.Config`` (``None``: ``configs/default.yaml``).
        model: an object with the ``chatapp.model.CTScribeModel`` interface, ``None`` to build it from the config on
            first use, or ``False`` to run without a model (measurements only).
        store: a ``retrieval.store.KnowledgeStore``-like object, ``None`` to open it from the config on first use,
            or ``False`` to run without retrieval.
        settings: overrides of the ``report:`` config section (e.g. ``use_llm=False``).
    """

    def __init__(self, config: Any = None, *, model: Any = None, store: Any = None, **settings: Any) -> None:
        if config is None:
            from chatapp.config import load_config

            config = load_config()
        self.config = config
        self.settings = report_settings(config.section("report"))
        self.settings.update(settings)
        if model is None and not self.settings.get("use_model", True):
            model = False
        if store is None and not self.settings.get("use_store", True):
            store = False
        self._model = _UNSET if model is None else model
        self._store = _UNSET if store is None else store
        self._regions_fn: Callable | None = None
        self._cache: OrderedDict[str, Study] = OrderedDict()
        # sha256 of an input file's bytes -> its volume's content hash: the same file again (a re-upload, a second
        # `report` over the same path) skips decoding (gzip alone was 0.42 s of a 0.74 s cached re-analysis)
        self._file_index: OrderedDict[str, str] = OrderedDict()
        self._seen: dict[str, Citation] = {}
        self.load_warnings: list[str] = []
        self._warm_thread: threading.Thread | None = None  # the last chat warm-up (see warm_chat)
        self._store_lock = threading.RLock()
        self.last_gate: dict[str, Any] = {}  # the last free answer's LLM text and the gate's reasons (auto mode)

    @classmethod
    def from_config(cls, config: Any = None, **overrides: Any) -> Pipeline:
        """Build a pipeline; nothing heavy loads here. ``overrides``: ``model=``, ``store=`` or report settings."""
        return cls(config, **overrides)

    # ------------------------------------------------------------------ lazy parts
    @property
    def model(self) -> Any:
        """The CT model (encoder + prototypes + LLM), or ``None`` when it cannot be loaded."""
        if self._model is _UNSET:
            try:
                from chatapp.model import CTScribeModel

                self._model = CTScribeModel.from_config(self.config)
            except Exception as e:  # degrade: report from measurements only
                self._model = False
                self._warn(f"model unavailable ({type(e).__name__}: {e}); findings come from measurements only")
        return self._model or None

    @property
    def store(self) -> Any:
        """The knowledge store, or ``None`` when it cannot be opened."""
        with self._store_lock:  # the chat warm-up opens it in a background thread
            return self._open_store()

    def _open_store(self) -> Any:
        if self._store is _UNSET:
            try:
                from retrieval.store import KnowledgeStore

                st = KnowledgeStore.from_config(self.config)
                st.ensure_builtin()
                self._store = st
            except Exception as e:
                self._store = False
                self._warn(f"knowledge store unavailable ({type(e).__name__}: {e}); citations fall back to built-in")
        return self._store or None

    def _warn(self, msg: str) -> None:
        log.warning(msg)
        if msg not in self.load_warnings:
            self.load_warnings.append(msg)

    @property
    def weights_label(self) -> str:
        m = self.model
        return str(getattr(m, "weights_label", "")) if m is not None else ""

    # ------------------------------------------------------------------ analyze
    def analyze(self, path: Any, *, progress: Progress | None = None) -> Study:
        """Load a CT and run regions, measurements and the model; cached by the volume's content hash.

        Args:
            path: a file or folder ``vision.io.load_ct`` reads (NIfTI, NRRD, DICOM folder/zip, npy), or a
                ``CTVolume`` already in memory.
            progress: called with (fraction 0..1, message) as stages finish.
        """
        prog = progress or (lambda f, m: None)
        t0 = time.perf_counter()
        prog(0.0, "loading the CT")
        digest = None
        if hasattr(path, "array") and hasattr(path, "spacing"):
            volume = path
        else:
            digest = _file_digest(path)
            known = self._file_index.get(digest) if digest else None
            if known is not None and known in self._cache:
                self._cache.move_to_end(known)
                prog(1.0, "done (cached)")
                return self._cache[known]
            from vision.io import IngestLimits, load_ct

            volume = load_ct(os.fspath(path), limits=IngestLimits.from_config(self.config),
                             keep_age_sex=bool(self.config.get("privacy.keep_age_sex", False)))
        key = volume.content_hash()
        if digest:
            self._file_index[digest] = key
            while len(self._file_index) > 4 * int(self.settings.get("cache_size", 8)):
                self._file_index.popitem(last=False)
        if key in self._cache:
            self._cache.move_to_end(key)
            prog(1.0, "done (cached)")
            return self._cache[key]
        study = Study(study_id=key[:16], volume=volume, warnings=list(getattr(volume, "warnings", []) or []))
        study.timings["load"] = time.perf_counter() - t0
        prog(0.1, "segmenting the 10 regions")
        self._run_regions(study)
        prog(0.5, "measuring")
        self._run_measure(study)
        prog(0.7, "running the CT model")
        self._run_model(study)
        study.warnings.extend(w for w in self.load_warnings if w not in study.warnings)
        self._cache[key] = study
        while len(self._cache) > int(self.settings.get("cache_size", 8)):
            self._cache.popitem(last=False)
        prog(1.0, "done")
        return study

    def _run_regions(self, study: Study) -> None:
        t = time.perf_counter()
        try:
            from vision.regions import compute_regions

            res = compute_regions(study.volume, backend=str(self.config.get("regions.backend", "auto") or "auto"))
            study.regions = dict(res.masks)
            study.absent_regions = list(res.absent)
            study._region_result = res  # type: ignore[attr-defined]  # kept for measure()
        except Exception as e:
            study.warnings.append(f"region segmentation failed ({type(e).__name__}: {e}); regions not assessed")
            log.warning("regions failed: %s", e)
        study.timings["regions"] = time.perf_counter() - t

    def _run_measure(self, study: Study) -> None:
        t = time.perf_counter()
        res = getattr(study, "_region_result", None)
        if res is None:
            return
        try:
            from vision.measure import measure

            study.measurements = list(measure(study.volume, res))
        except Exception as e:
            study.warnings.append(f"measurements failed ({type(e).__name__}: {e})")
            log.warning("measure failed: %s", e)
        try:  # finding masks keyed by the mask ids sentences cite ("findings/nodule_1", "findings/metal", ...)
            from vision.measure import overlays

            study.finding_masks = {f"findings/{k}": v for k, v in overlays(study.volume, res).items()}
        except Exception as e:  # masks are a display aid: never fatal
            log.info("finding masks unavailable: %s", e)
        study.timings["measure"] = time.perf_counter() - t

    def _run_model(self, study: Study) -> None:
        m = self.model
        if m is None:
            return
        t = time.perf_counter()
        try:
            if getattr(m, "needs_regions", False):  # region tokens: reuse the masks analyze() already computed
                study.tokens = m.encode(study.volume, getattr(study, "_region_result", None) or study.regions or None)
            else:
                study.tokens = m.encode(study.volume)
            probs, cues = m.predict_findings(study.tokens)
            study.probabilities = {str(k): float(v) for k, v in dict(probs).items()}
            study.cues = str(cues or "")
            study.weights = str(getattr(m, "weights_label", "") or "")
            novelty = getattr(m, "novelty", None)
            study.model_novelty = novelty(study.tokens) if novelty else None
        except Exception as e:
            study.warnings.append(f"CT model failed ({type(e).__name__}: {e}); findings come from measurements only")
            log.warning("model failed: %s", e)
        study.timings["model"] = time.perf_counter() - t

    # ------------------------------------------------------------------ chat warm-up
    def warm_chat(self, study: Study, *, background: bool = True) -> threading.Thread | None:
        """Prefill the LLM's prompt-prefix KV cache with the part of the chat prompt that every free question about
        ``study`` shares (system prompt, scan facts, cues, visual tokens: whatever ``prompts.chat_messages`` puts
        before the question), so the first question after analysis prefills only its own tail.

        The shared part is found, not assumed: the common leading rows of the prompt embeddings of two dummy
        questions without passages. Runs in a non-daemon thread when ``background`` (returned, or ``None`` when
        there is nothing to warm: no model, no visual tokens, or ``model.llm.prefix_cache`` off). Failures only warn.

        When free answers come from the grounded composer without the LLM (``report.free_answer`` auto with a small
        LLM, or extractive), the LLM is not warmed; the knowledge store is opened and searched once instead, so the
        first question does not pay the embedder load (~2 s; TCIA first question 2.3 s -> 0.03 s).
        """
        m = self.model
        llm = getattr(m, "llm", None)
        if self._extractive_free(m):  # free answers will not use the LLM: load the store's embedder instead
            if self._store is False:
                return None

            def work() -> None:
                try:
                    with self._store_lock:
                        st = self._open_store()
                        if st is not None:
                            st.search("chest CT finding", k=1)  # loads the embedder (~2 s on first use)
                except Exception as e:  # a warm-up must never break analysis
                    self._warn(f"knowledge store warm-up failed ({type(e).__name__}: {e})")
        elif m is None or study.tokens is None or not getattr(llm, "prefix_cache_size", 0) or not hasattr(llm, "warm"):
            return None
        else:
            work = self._llm_warm_work(m, llm, study)
        if not background:
            work()
            return None
        # not a daemon: a daemon thread still inside torch when the interpreter exits aborts the process
        # ("terminate called without an active exception", exit 134); exit waits for the warm-up instead
        th = threading.Thread(target=work, name="ctscribe-chat-warm", daemon=False)
        th.start()
        self._warm_thread = th
        return th

    def _extractive_free(self, m: Any) -> bool:
        """Whether free questions are answered by the grounded composer without the LLM (``report.free_answer``)."""
        mode = str(self.settings.get("free_answer", "auto")).lower()
        return m is None or mode == "extractive" or (mode == "auto" and self._small_llm(m))

    def _llm_warm_work(self, m: Any, llm: Any, study: Study) -> Callable[[], None]:
        def work() -> None:
            try:
                import torch

                facts = vqa.study_facts(study, self.calls(study))
                with torch.no_grad():
                    a, b = (m.prompt_embeds(prompts.chat_messages(facts, [], [], q), study.tokens) for q in "?!")
                k = min(a.shape[1], b.shape[1])
                n = int((a[0, :k] == b[0, :k]).all(-1).long().cumprod(0).sum())
                llm.warm(a[:, :n])
            except Exception as e:  # a warm-up must never break analysis
                self._warn(f"chat warm-up failed ({type(e).__name__}: {e})")

        return work

    # ------------------------------------------------------------------ report
    def calls(self, study: Study) -> dict[str, FindingCall]:
        """The finding decisions behind both the report and the chat."""
        return call_findings(study, self.settings)

    def report(self, study: Study) -> Report:
        """Draft the region-grounded report: structure → optional LLM rephrasing → guard."""
        calls = self.calls(study)
        rep = build_structured_report(study, self.settings, recommend=self._recommend, calls=calls)
        rep.guard["llm"] = "not used"
        mode = str(self.settings.get("rephrase", "findings"))
        if self._llm_enabled() and mode != "none":
            m = self.model
            if m is None:
                rep.guard["llm"] = "skipped: model unavailable"
            else:
                rewrites = self._rephrase(rep, mode)
                rep.guard["llm"] = f"rephrased {len(rewrites)} sentence(s)"
                guard.apply_rephrasings(rep, rewrites)
        guard.audit(rep, supported_findings(calls))
        rep.guard["calls"] = {n: {"present": c.present, "source": c.source, "confidence": round(c.confidence, 3),
                                  **({"note": c.note} if c.note else {})} for n, c in calls.items()}
        for w in study.warnings + self.load_warnings:
            if w not in rep.notices:
                rep.notices.append(w)
        rep.weights = study.weights or rep.weights
        if rep.weights and "demo" in rep.weights.lower() and DEMO_WEIGHTS_NOTICE not in rep.weights:
            rep.weights = f"{rep.weights} ({DEMO_WEIGHTS_NOTICE})"
        for c in rep.citations:
            self._seen[c.key] = c
        return rep

    def _llm_enabled(self) -> bool:
        """``report.use_llm``: true / false, or "auto" = only when the model's LLM runs on a GPU.

        On CPU the embedded 135M LLM costs 3-40 s per sentence on 2 cores and its rewrites were mostly rejected by
        the guard (1 of 6 accepted on the TCIA sentences, numbers swapped), so "auto" keeps CPU drafts structured.
        """
        v = self.settings.get("use_llm", "auto")
        if isinstance(v, str) and v.lower() == "auto":
            m = self.model
            dev = getattr(getattr(m, "llm", None), "device", None) if m is not None else None
            return getattr(dev, "type", str(dev)) == "cuda"
        return bool(v)

    def _rephrase(self, rep: Report, mode: str) -> dict[str, str]:
        """LLM rewrites by sentence id. Model-estimate sentences are never rephrased (their wording is the honesty)."""
        out: dict[str, str] = {}
        m = self.model
        cap = int(self.settings.get("max_new_tokens", 60))
        tok = getattr(getattr(m, "llm", None), "tokenizer", None)
        for sec in rep.sections:
            if sec.region in ("recommendations", "impression"):  # the impression restates findings verbatim
                continue
            for s in sec.sentences:
                if (mode == "findings" and not s.findings) or s.source == "model":
                    continue
                budget = prompts.rephrase_max_new_tokens(s.text, tok, cap)
                try:
                    text = m.generate(prompts.rephrase_messages(s.text), max_new_tokens=budget)
                except TypeError:
                    text = m.generate(prompts.rephrase_messages(s.text))
                except Exception as e:
                    self._warn(f"LLM rephrasing failed ({type(e).__name__}: {e}); structured sentences kept")
                    return out
                out[s.id] = prompts.clean_rephrase(str(text))
        return out

    def _recommend(self, calls: dict[str, FindingCall]) -> tuple[list[Sentence], list[Citation]]:
        nod = calls.get("Lung nodule")
        if nod is None or not nod.present or nod.source != "measured" or not nod.measurements:
            return [], []
        largest = nod.measurements[0]
        d = nodule_diameter(largest) or 0.0
        category, advice = fleischner_advice(d, len(nod.measurements) > 1)
        cit = None
        st = self.store
        if st is not None:
            try:
                hits = st.search(f"Fleischner 2017 follow-up for {category} incidental solid pulmonary nodule", k=1)
                if hits:
                    cit = hits[0].to_citation(1)
            except Exception as e:
                self._warn(f"knowledge search failed ({type(e).__name__}: {e})")
        if cit is None:
            cit = Citation(**{**FLEISCHNER_FALLBACK.to_dict(), "n": 1})
        text = (f"For {category} (largest {round(d)} mm), the Fleischner Society 2017 guideline for incidental "
                f"nodules in adults aged 35 or older suggests {advice} [1].")
        ev = [Evidence("measurement", f"nodule diameter = {d:.1f} mm", d, "nodule"),
              Evidence("passage", cit.title, cit.text[:300], cit.key)]
        return [Sentence(text, "recommendation", nodule_mask(largest), ev, "guideline", 0.9, [], [1])], [cit]

    # ------------------------------------------------------------------ ask
    def ask(self, study: Study, question: str, history: list[dict] | None = None) -> Answer:
        """Answer one question about the study (``history``: prior ``{"role", "content"}`` turns, oldest first)."""
        final: Answer | None = None
        for part in self.ask_stream(study, question, history):
            if isinstance(part, Answer):
                final = part
        assert final is not None
        return final

    def ask_stream(self, study: Study, question: str, history: list[dict] | None = None) -> Iterator[str | Answer]:
        """Yield text deltas, then the final ``Answer`` (template questions yield their whole text at once).

        The final ``Answer.text`` is authoritative: with ``report.free_answer: auto`` and a large LLM, text that
        fails ``compose.llm_gate`` after it streamed is replaced by the grounded answer, so the concatenated deltas
        can differ from it (the app and ``ctscribe ask`` show ``Answer.text``)."""
        from vision.errors import CTScribeError

        if not question or not question.strip():
            raise CTScribeError("the question is empty; type a question about the scan, e.g. 'Is there a nodule?'")
        calls = self.calls(study)
        plan = vqa.plan_question(question, history or [], study, calls)
        if isinstance(plan, Answer):
            yield plan.text
            yield plan
            return
        mode = str(self.settings.get("free_answer", "auto")).lower()
        m = self.model
        weights = study.weights or self.weights_label
        extractive = self._extractive_free(m)
        n_pass = int(self.settings["chat_passages"])
        if extractive or mode == "auto":
            n_pass = max(n_pass, int(self.settings.get("free_answer_passages", 3)))
        citations: list[Citation] = []
        st = self.store
        if st is not None:
            try:
                with self._store_lock:  # waits for a running warm-up (it loads the embedder this search needs)
                    hits = st.search(plan.query, k=max(n_pass, int(self.config.get("retrieval.k", 5) or 5)))
                citations = vqa.citations_from_hits(hits[:n_pass])
            except Exception as e:
                self._warn(f"knowledge search failed ({type(e).__name__}: {e})")
        for c in citations:
            self._seen[c.key] = c
        if extractive:  # the grounded composer: no LLM, each sentence streams as soon as it is composed
            ans = self._composed(study, plan, calls, citations, weights)
            for i, sent in enumerate(ans.text.split("\n")):
                yield ("\n" if i else "") + sent
            yield ans
            return
        llm_cites = citations[:int(self.settings["chat_passages"])]
        msgs = prompts.chat_messages(vqa.study_facts(study, calls), llm_cites, history or [], question,
                                     passage_chars=int(self.settings["chat_passage_chars"]))
        parts: list[str] = []
        cut: int | None = None
        try:
            out = m.generate(msgs, tokens=study.tokens, stream=True)
            if isinstance(out, str):
                out = [out]
            for delta in out:
                parts.append(str(delta))
                yield str(delta)
                cut = repeat_cut("".join(parts))
                if cut is not None:  # a small LLM decoding greedily loops: stop it at the first repeated sentence
                    close = getattr(out, "close", None)
                    if close is not None:
                        close()  # an abandoned stream stops generating at the next token (chatapp.llm)
                    break
        except Exception as e:
            self._warn(f"LLM generation failed ({type(e).__name__}: {e})")
            ans = self._composed(study, plan, calls, citations, weights)
            yield ans.text
            yield ans
            return
        text = "".join(parts)[:cut].strip()
        if mode == "auto":
            reasons = compose.llm_gate(text, question, vqa.study_facts(study, calls), llm_cites, calls,
                                       plan.parsed.findings, repeated=cut is not None)
            self.last_gate = {"llm_text": text, "reasons": reasons}
            if reasons:  # the streamed LLM text is replaced by the grounded answer (the app shows Answer.text)
                log.info("free answer: LLM text rejected (%s)", "; ".join(reasons))
                ans = self._composed(study, plan, calls, citations, weights)
                yield ans
                return
        unsupported = sorted(guard.positive_findings(text) - supported_findings(calls) - set(plan.parsed.findings))
        if unsupported:  # the LLM asserted something the scan does not show: say so, never keep it silently
            note = (" [Note: the scan findings do not include " + ", ".join(unsupported).lower() + "; treat that "
                    "part of the answer as unsupported.]")
            yield note
            text += note
        yield Answer(text, llm_cites, plan.evidence, "free", weights)

    @staticmethod
    def _small_llm(m: Any) -> bool:
        """Whether the model's LLM is small by its name: the embedded default (``embedded:...``) or a name that gives
        a size below 2B ('SmolLM2-360M', 'Qwen2.5-0.5B', '1.5b'). Any other name, or none (a test double), counts
        as not small: its text is used when it passes the gate."""
        arch = getattr(m, "arch", None)
        llm = getattr(m, "llm", None)
        name = str(arch.get("llm_name", "") if isinstance(arch, dict) else "") or str(
            getattr(llm, "name_or_path", "") or "")
        low = name.lower()
        return low.startswith("embedded:") or bool(re.search(
            r"(?<![\d.])\d{1,3}m(?![a-z])|(?<![\d.])(0\.\d+|1(\.\d+)?)b(?![a-z])", low))

    def _composed(self, study: Study, plan: Any, calls: dict[str, FindingCall], citations: list[Citation],
                  weights: str) -> Answer:
        """The grounded extractive answer (``chatapp.compose``): scan facts, then cited knowledge sentences; the
        fact sentences and the quoted passage sentences are separated by a newline."""
        p = plan.parsed
        guidance = []
        if "Lung nodule" in p.findings or compose.topic_of(plan.query, [])[0] == "Lung nodule":
            rec, rec_cites = self._recommend(calls)  # the measured nodule's Fleischner category, as in the report
            guidance = [(r.text, rec_cites[0]) for r in rec[:1] if rec_cites]
        c = compose.compose_answer(plan.query, p.findings, study, calls, citations, self.settings, region=p.region,
                                   k_sentences=int(self.settings.get("free_answer_sentences", 2)),
                                   guidance=guidance)
        n_facts = len(c.sentences) - sum(1 for s in c.sentences if re.search(r"\[\d+\][.!?]$", s))
        facts, quotes = c.sentences[:n_facts], c.sentences[n_facts:]
        text = " ".join(facts) + ("\n" + " ".join(quotes) if quotes else "")
        ev = list(plan.evidence) + [e for e in c.evidence if e not in plan.evidence]
        return Answer(text.strip(), c.citations, ev, "free", weights)

    # ------------------------------------------------------------------ knowledge
    def knowledge(self, key: str) -> Citation | None:
        """Open a cited passage by its citation key (``None`` when unknown)."""
        if key in self._seen:
            return self._seen[key]
        st = self.store
        if st is None:
            return FLEISCHNER_FALLBACK if key == FLEISCHNER_FALLBACK.key else None
        try:
            hits = st.search(key, k=1, where={"key": key})
        except Exception:
            return None
        return hits[0].to_citation(1) if hits else None


def study_name(path: str | os.PathLike, content_hash: str | None = None) -> str:
    """A PHI-free output name: the sanitised file stem (DICOM folders/zips and stems that look like identifiers use
    the content hash instead)."""
    import re

    p = Path(path)
    stem = p.name
    for suf in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".npy", ".npz", ".zip", ".dcm", ".mha", ".mhd"):
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
            break
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:64]
    # MRNs, accession numbers and dates have long digit runs; DICOM folder/zip names often carry patient names
    looks_like_id = bool(re.search(r"\d{4,}", safe)) or p.is_dir() or p.suffix.lower() in (".dcm", ".zip")
    if not safe or looks_like_id:
        if content_hash:
            return content_hash[:16]
        import hashlib

        return hashlib.sha256(os.fsencode(os.path.abspath(p))).hexdigest()[:16]
    return safe
