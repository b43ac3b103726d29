"""Label → distil → use: the labels file, the teacher pass through the CLI with the
simulated judge, a few real training steps of both local stages, the leakage refusal, and
the eval report of a distilled stage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sentence_transformers import CrossEncoder

from llmrerank import DiskCache, UserError
from llmrerank.evaluation.datasets import load_dataset
from llmrerank.pipeline import PipelineSpec, build_stage, stage_training
from llmrerank.rerankers.cross_encoder import default_cross_encoder
from llmrerank.rerankers.dense import default_dense_model
from llmrerank.settings import TREC_FILES, asset
from llmrerank.testing import SimulatedJudge
from llmrerank.testing.judge import normalise
from llmrerank.training import (
    TRAINING_RECORD,
    LabelRecord,
    TrainSettings,
    distill,
    labels_from_golden,
    ndcg_at,
    position_grade,
    read_labels,
    split_queries,
    write_labels,
)
from llmrerank.training.labels import file_sha256, group_by_query, repair_tail

from .test_cli import run_cli

QUERIES, DEPTH = 3, 10


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "query_id": "q1",
        "query": "what is a flea",
        "passage_id": "p1",
        "passage": "Fleas are small insects.",
        "label": 2,
        "provenance": {"source": "qrels", "dataset": "toy"},
    }
    return {**base, **changes}


def test_labels_round_trip(tmp_path: Path) -> None:
    records = [
        LabelRecord("q1", "what is a flea", "p1", "Fleas are insects.", 3.0, {"source": "qrels"}),
        LabelRecord(
            "q1", "what is a flea", "p2", "Dogs bark.", 0.0, {"source": "qrels"}, score=0.1, rank=2, of=2
        ),
        LabelRecord(
            "q2", "héllo wörld", "p1", "A passage with ünïcode.", 1.5, {"source": "llm", "model": "m"}
        ),
    ]
    path = tmp_path / "labels.jsonl"
    assert write_labels(path, records) == 3
    assert read_labels(path) == records
    first = json.loads(path.read_text("utf-8").splitlines()[0])
    assert first["label"] == 3  # whole grades stay integers in the file
    grouped = group_by_query(records)
    assert [(q.query_id, q.labels) for q in grouped] == [("q1", (3.0, 0.0)), ("q2", (1.5,))]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON"),
        (json.dumps(["a list"]), "is a JSON object"),
        (json.dumps({k: v for k, v in record().items() if k != "label"}), "missing label"),
        (json.dumps(record(label="high")), "label must be a finite number"),
        (json.dumps(record(label=-1)), "label must be >= 0"),
        (json.dumps(record(query="  ")), "query must be non-empty text"),
        (json.dumps(record(provenance={"source": "guess"})), "provenance.source must be one of"),
        (json.dumps(record(rank=0)), "rank must be a positive integer"),
        (json.dumps(record(extra=1)), "unknown keys"),
        (json.dumps(record(passage_id="p0")), "labelled twice"),
    ],
)
def test_a_malformed_line_is_refused_naming_its_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps(record(passage_id="p0")) + "\n" + line + "\n", "utf-8")
    with pytest.raises(UserError, match=rf"labels\.jsonl:2: .*{message}"):
        read_labels(path)


def test_an_interrupted_append_is_cut_back_to_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps(record()) + "\n" + '{"query_id": "q1", "que', "utf-8")
    assert repair_tail(path)
    assert len(read_labels(path)) == 1
    assert not repair_tail(path)


def test_qrels_convert_to_labels_with_their_grades(tmp_path: Path) -> None:
    golden = load_dataset("dl20", limit=2, depth=DEPTH)
    records = labels_from_golden(golden)
    assert len(records) == 2 * DEPTH
    for item in records:
        assert item.label == max(0, golden.qrels[item.query_id].get(item.passage_id, 0))
        assert item.provenance["source"] == "qrels"
    assert {r.label for r in records} != {0.0}
    out = tmp_path / "qrels.jsonl"
    completed = run_cli(
        "label", "--dataset", "dl20", "--limit", "2", "--depth", str(DEPTH), "--from-qrels", "--out", str(out)
    )
    assert completed.returncode == 0, completed.stderr
    assert read_labels(out) == records


def test_position_bands_give_the_top_the_highest_grade() -> None:
    grades = [0, 1, 2, 3]
    assert [position_grade(p, 8, grades) for p in range(8)] == [3, 3, 2, 2, 1, 1, 0, 0]
    assert [position_grade(p, 3, grades) for p in range(3)] == [3, 2, 1]
    assert ndcg_at([0, 3, 1], [0.9, 0.5, 0.1]) == pytest.approx(
        (1 / 2**0.5 * 0 + 3 / 1.5849625007211563 + 1 / 2) / (3 + 1 / 1.5849625007211563)
    )
    assert ndcg_at([0, 0], [1.0, 0.5]) is None


def dl20_input(tmp_path: Path) -> Path:
    path = tmp_path / "queries.jsonl"
    lines = Path(asset(TREC_FILES["dl20"][0])).read_text("utf-8").splitlines()[:QUERIES]
    with path.open("w", encoding="utf-8") as handle:
        for line in lines:
            raw = json.loads(line)
            candidates = [{"id": c["docid"], "text": c["text"]} for c in raw["candidates"][:DEPTH]]
            handle.write(
                json.dumps({"query_id": raw["qid"], "query": raw["query"], "candidates": candidates}) + "\n"
            )
    return path


@pytest.fixture(scope="module")
def sim_labels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(input, labels): the simulated judge at sigma 1 grading 3 DL20 queries × 10 passages."""
    folder = tmp_path_factory.mktemp("label")
    input_path, out = dl20_input(folder), folder / "labels.jsonl"
    completed = run_cli(
        "label",
        str(input_path),
        "-m",
        "sim:dl20@1.0",
        "--out",
        str(out),
        "--cache-dir",
        str(folder / "cache"),
    )
    assert completed.returncode == 0, completed.stderr
    assert f"labelled {QUERIES} queries" in completed.stdout
    assert "[label] 3/3 queries" in completed.stderr
    return input_path, out


def test_label_writes_the_judges_grades_with_provenance(sim_labels: tuple[Path, Path]) -> None:
    _, out = sim_labels
    candidates_path, qrels_path = (asset(p) for p in TREC_FILES["dl20"])
    judge = SimulatedJudge.from_trec(candidates_path, qrels_path, sigma=1.0)
    records = read_labels(out)
    assert len(records) == QUERIES * DEPTH
    for item in records:
        perceived = judge.model.perceived(
            " ".join(item.query.split()),
            normalise(item.passage)[:80],
            judge.relevance(item.query, item.passage),
        )
        assert item.label == judge.model.grade(perceived, 3, [0, 1, 2, 3])
    provenance = records[0].provenance
    assert provenance["model"] == "sim:dl20@1.0"
    assert provenance["strategy"] == "pointwise"
    assert provenance["prompt"].startswith("pointwise/relevance@")
    assert len(provenance["prompt_sha256"]) == len(provenance["rubric_sha256"]) == 64
    assert provenance["rubric"] == "general-relevance@1"  # the rubric ref: name@version
    assert provenance["mapping"] == "grade"


def test_a_second_label_run_is_all_cache_hits_and_a_rerun_appends_nothing(
    sim_labels: tuple[Path, Path], tmp_path: Path
) -> None:
    input_path, out = sim_labels
    cache = out.parent / "cache"
    again = tmp_path / "again.jsonl"
    completed = run_cli(
        "label", str(input_path), "-m", "sim:dl20@1.0", "--out", str(again), "--cache-dir", str(cache)
    )
    assert completed.returncode == 0, completed.stderr
    calls = QUERIES * DEPTH
    assert f"{calls} LLM calls, {calls} from the cache" in completed.stdout
    assert read_labels(again) == read_labels(out)
    before = out.read_bytes()
    completed = run_cli(
        "label", str(input_path), "-m", "sim:dl20@1.0", "--out", str(out), "--cache-dir", str(cache)
    )
    assert completed.returncode == 0, completed.stderr
    assert f"labelled 0 queries ({QUERIES} already done): 0 pairs" in completed.stdout
    assert out.read_bytes() == before
    other = run_cli(
        "label",
        str(input_path),
        "-m",
        "sim:dl20@1.0",
        "-s",
        "setwise",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
    )
    assert other.returncode == 2
    assert "already holds labels from another teacher" in other.stderr


def test_label_dry_run_prints_the_call_bound_and_calls_nothing(
    sim_labels: tuple[Path, Path], tmp_path: Path
) -> None:
    input_path, _ = sim_labels
    completed = run_cli(
        "label", str(input_path), "-m", "sim:dl20@1.0", "--out", str(tmp_path / "x.jsonl"), "--dry-run"
    )
    assert completed.returncode == 0, completed.stderr
    assert f"calls ≤ {QUERIES * DEPTH}" in completed.stdout
    assert not (tmp_path / "x.jsonl").exists()


def test_listwise_orders_become_position_bands(tmp_path: Path) -> None:
    input_path, out = dl20_input(tmp_path), tmp_path / "listwise.jsonl"
    completed = run_cli(
        "label",
        str(input_path),
        "-m",
        "sim:dl20",
        "-s",
        "listwise",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert completed.returncode == 0, completed.stderr
    records = read_labels(out)
    assert {r.provenance["mapping"] for r in records} == {"position-bands"}
    for item in records:
        assert item.of == DEPTH
        assert item.rank is not None
        assert item.label == position_grade(item.rank - 1, DEPTH, [0, 1, 2, 3])


def test_the_query_split_is_seeded_and_keeps_queries_whole() -> None:
    golden = load_dataset("dl20", limit=10, depth=3)
    queries = group_by_query(labels_from_golden(golden))
    train, validation = split_queries(queries, 0.2, seed=0)
    assert len(validation) == 2
    assert len(train) == 8
    assert not {q.query_id for q in train} & {q.query_id for q in validation}
    assert split_queries(queries, 0.2, seed=0) == (train, validation)
    assert split_queries(queries, 0.2, seed=1) != (train, validation)


def test_distill_refuses_labels_that_overlap_the_eval_set(tmp_path: Path) -> None:
    golden = load_dataset("dl19", limit=2, depth=3)
    records = labels_from_golden(golden)
    leaked = tmp_path / "leaked.jsonl"
    write_labels(leaked, records)
    with pytest.raises(UserError, match=r"2 labelled queries are in dl19"):
        distill(leaked, "cross-encoder:", tmp_path / "out", eval_sets=["dl19"])
    # a different id and spelling of the same query is still the same query
    renamed = [
        LabelRecord(
            "x-" + r.query_id, "  " + r.query.upper() + " ", r.passage_id, r.passage, r.label, r.provenance
        )
        for r in records
    ]
    write_labels(leaked, renamed)
    with pytest.raises(UserError, match=r"are in dl19"):
        distill(leaked, "cross-encoder:", tmp_path / "out", eval_sets=["dl19"])
    excluded = tmp_path / "excluded.txt"
    excluded.write_text(records[0].query + "\n", "utf-8")
    with pytest.raises(UserError, match=r"1 labelled queries are in the excluded queries"):
        distill(leaked, "cross-encoder:", tmp_path / "out", exclude_queries=excluded)
    completed = run_cli("distill", str(leaked), "--out", str(tmp_path / "out"), "--eval-set", "dl19")
    assert completed.returncode == 2
    assert "are in dl19" in completed.stderr
    assert not (tmp_path / "out").exists()


# one step over two lists of ten passages: seconds on a CPU
QUICK = TrainSettings(
    batch_size=2, list_size=DEPTH, max_length=64, max_steps=1, eval_steps=1, learning_rate=5e-5
)


@pytest.fixture(scope="module")
def distilled_ce(
    sim_labels: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, Any], list[str]]:
    """(labels, folder, training record, progress lines) of one quick cross-encoder run."""
    _, labels = sim_labels
    out = tmp_path_factory.mktemp("distilled") / "ce"
    lines: list[str] = []
    record_ = distill(
        labels,
        "cross-encoder:",
        out,
        settings=QUICK,
        validation_fraction=0.34,
        eval_sets=["dl19"],
        echo=lines.append,
    )
    return labels, out, record_, lines


def test_a_distilled_cross_encoder_has_a_model_card_and_a_training_record(
    distilled_ce: tuple[Path, Path, dict[str, Any], list[str]],
) -> None:
    labels, out, record_, lines = distilled_ce
    assert any(line.startswith("[distill] validation nDCG@10 before training") for line in lines)
    assert any(line.startswith("[distill] step 1/1") for line in lines)
    assert any("2 training rows (lambda), batch 2, lr 5e-05, 1 steps, validating every 1" in x for x in lines)
    counts = record_["counts"]
    assert (counts["queries"], counts["train_queries"], counts["validation_queries"]) == (3, 2, 1)
    assert (counts["pairs"], counts["train_pairs"], counts["validation_pairs"]) == (30, 20, 10)
    assert counts["steps"] == 1
    assert record_["base_model"] == default_cross_encoder()
    assert record_["settings"]["loss"] == "lambda"
    assert record_["labels"]["provenance"][0]["model"] == "sim:dl20@1.0"
    assert record_["validation"]["before"] is not None
    assert record_["validation"]["best"] is not None
    assert record_["weights_sha256"] == {"model.safetensors": file_sha256(out / "model.safetensors")}
    assert json.loads((out / TRAINING_RECORD).read_text("utf-8")) == json.loads(json.dumps(record_))
    card = (out / "MODEL_CARD.md").read_text("utf-8")
    for needle in (
        default_cross_encoder(),
        str(labels),
        record_["labels"]["sha256"],
        "teacher: `sim:dl20@1.0`, pointwise",
        "rubric `general-relevance@1`",
        "3 (2 train, 1 validation, split by query)",
        "learning_rate: 5e-05",
        "evaluation sets checked for overlap (none found): dl19",
        "Trained in",
    ):
        assert needle in card, needle


def test_a_distilled_cross_encoder_loads_through_stage_specs_torch_and_onnx(
    distilled_ce: tuple[Path, Path, dict[str, Any], list[str]], tmp_path: Path
) -> None:
    labels, out, _, _ = distilled_ce
    spec = f"cross-encoder:{out}"
    query = load_dataset("dl20", limit=1, depth=DEPTH).queries[0]
    torch_ranking = build_stage(spec + "?backend=torch").rerank(query.query, query.candidates)
    assert sorted(torch_ranking.ids()) == sorted(c.id for c in query.candidates)
    onnx_stage = build_stage(f"{spec}?backend=onnx&onnx_cache_dir={tmp_path / 'onnx'}")
    onnx_scores = {item.id: item.score for item in onnx_stage.rerank(query.query, query.candidates)}
    for item in torch_ranking:  # the ONNX export of the distilled folder scores as torch does
        assert onnx_scores[item.id] == pytest.approx(item.score, abs=1e-3)
    training = stage_training(spec)
    assert training is not None
    assert training["labels"] == str(labels)
    assert training["teachers"] == ["sim:dl20@1.0"]
    assert PipelineSpec(narrow_with=(spec,)).to_dict()["trained_on"] == [training]
    assert stage_training("cross-encoder:") is None
    assert "trained_on" not in PipelineSpec(narrow_with=("cross-encoder:",)).to_dict()


def test_the_eval_report_of_a_distilled_stage_names_its_training_labels(
    distilled_ce: tuple[Path, Path, dict[str, Any], list[str]], tmp_path: Path
) -> None:
    from llmrerank.evaluation.experiment import DatasetSpec, Experiment
    from llmrerank.evaluation.report import write_report
    from llmrerank.evaluation.runner import run_experiment

    labels, out, _, _ = distilled_ce
    experiment = Experiment(
        name="distilled",
        datasets=(DatasetSpec("dl19", limit=1, depth=5),),
        pipelines=(
            PipelineSpec(name="bm25"),
            PipelineSpec(name="student", narrow_with=(f"cross-encoder:{out}?backend=torch",)),
        ),
        metrics=("ndcg@10",),
    )
    results = [r.data for r in run_experiment(experiment, tmp_path / "runs", progress=False)]
    assert "trained_on" not in results[0]["pipeline"]
    md, html = write_report(results, tmp_path / "report", metrics=["ndcg@10"])
    text = md.read_text("utf-8")
    stage = f"cross-encoder:{out}?backend=torch"
    expected = f"dl19:student: {stage} (base {default_cross_encoder()}) trained on {labels}"
    assert expected in text
    assert "checked against dl19" in text
    assert str(labels) in html.read_text("utf-8")


def test_a_distilled_dense_stage_trains_and_loads(sim_labels: tuple[Path, Path], tmp_path: Path) -> None:
    _, labels = sim_labels
    out = tmp_path / "dense"
    completed = run_cli(
        "distill", str(labels), "--stage", "dense:", "--out", str(out),
        "--max-steps", "1", "--eval-steps", "1", "--batch-size", "8", "--max-length", "64",
        "--validation-fraction", "0.34",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert f"Use it as dense:{out}" in completed.stdout
    record_ = json.loads((out / TRAINING_RECORD).read_text("utf-8"))
    assert record_["base_model"] == default_dense_model()
    assert record_["settings"]["loss"] == "cosent"
    assert record_["settings"]["learning_rate"] == 1e-5
    assert record_["counts"]["steps"] == 1
    cache = DiskCache(tmp_path / "cache")
    query = load_dataset("dl20", limit=1, depth=DEPTH).queries[0]
    stage = build_stage(f"dense:{out}?backend=torch", cache=cache)
    assert len(stage.rerank(query.query, query.candidates).ids()) == DEPTH
    again = build_stage(f"dense:{out}?backend=torch", cache=cache)
    again.rerank(query.query, query.candidates)
    assert (again.cache_hits, again.cache_misses) == (DEPTH, 0)  # type: ignore[attr-defined]
    # the same folder trained again: its passage embeddings are not the old weights' any more
    (out / TRAINING_RECORD).write_text(json.dumps({**record_, "created": "later"}), "utf-8")
    retrained = build_stage(f"dense:{out}?backend=torch", cache=cache)
    retrained.rerank(query.query, query.candidates)
    assert (retrained.cache_hits, retrained.cache_misses) == (0, DEPTH)  # type: ignore[attr-defined]


def test_distill_refuses_a_wrong_loss_and_a_used_folder(
    sim_labels: tuple[Path, Path], tmp_path: Path
) -> None:
    _, labels = sim_labels
    with pytest.raises(UserError, match="not one for a dense stage"):
        distill(labels, "dense:", tmp_path / "a", settings=TrainSettings(loss="lambda"))
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        distill(labels, "cross-encoder:", tmp_path / "used")
    with pytest.raises(UserError, match="use cross-encoder:"):
        distill(labels, "bm25:", tmp_path / "b")


def test_when_no_step_beats_the_base_model_its_weights_are_the_output(
    sim_labels: tuple[Path, Path], tmp_path: Path
) -> None:
    _, labels = sim_labels
    lines: list[str] = []
    # a step this small cannot change a ranking: validation ties the base model
    still = dataclasses.replace(QUICK, learning_rate=1e-12)
    record_ = distill(
        labels, "cross-encoder:", tmp_path / "ce", settings=still, validation_fraction=0.34, echo=lines.append
    )
    assert any("no step beat the base model" in line for line in lines)
    validation = record_["validation"]
    assert (validation["best_step"], validation["best"]) == (0, validation["before"])
    pairs = [("a query about rivers", "the Nile is a river"), ("a query about rivers", "tax forms")]
    base = CrossEncoder(default_cross_encoder(), device="cpu").predict(pairs)
    out = CrossEncoder(str(tmp_path / "ce"), device="cpu").predict(pairs)
    assert np.allclose(base, out, atol=1e-6)


def test_relevant_grade_sets_the_least_label_of_an_mnrl_positive(
    sim_labels: tuple[Path, Path], tmp_path: Path
) -> None:
    _, labels = sim_labels
    # above every label on the 0-3 scale: no positive is left, which the command says before training
    completed = run_cli(
        "distill", str(labels), "--stage", "dense:", "--loss", "mnrl", "--relevant-grade", "4",
        "--out", str(tmp_path / "dense"),
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    assert "no query has a passage at or above the relevance grade" in completed.stderr
