"""The generated sample: deterministic bytes, one answer per query, disjoint train/dev entities."""

from __future__ import annotations

import pytest

from msmarco_ft.errors import InputError
from msmarco_ft.formats import read_table
from msmarco_ft.sample import FILES, iter_world, plan_world, write_sample

SIZE = dict(passages=600, train_queries=120, dev_queries=60)


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    write_sample(out, seed=7, **SIZE)
    return out


def test_same_seed_gives_identical_bytes_and_another_seed_differs(sample_dir, tmp_path):
    write_sample(tmp_path / "again", seed=7, **SIZE)
    write_sample(tmp_path / "other", seed=8, **SIZE)
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (sample_dir / name).read_bytes(), name
    assert (tmp_path / "other" / "collection.tsv").read_bytes() != (sample_dir / "collection.tsv").read_bytes()
    assert (tmp_path / "other" / "queries.dev.small.tsv").read_bytes() != \
        (sample_dir / "queries.dev.small.tsv").read_bytes()


def test_sizes_and_every_query_has_exactly_one_existing_passage(sample_dir):
    collection = read_table(sample_dir / "collection.tsv", "collection")
    assert collection["pid"].tolist() == list(range(SIZE["passages"]))
    for split, wanted in (("train", SIZE["train_queries"]), ("dev.small", SIZE["dev_queries"])):
        queries = read_table(sample_dir / f"queries.{split}.tsv", "queries")
        qrels = read_table(sample_dir / f"qrels.{split}.tsv", "qrels")
        assert len(queries) == wanted
        assert sorted(qrels["qid"]) == sorted(queries["qid"])  # one judgement per query, no strays
        assert qrels["pid"].isin(collection["pid"]).all()
        assert (qrels["rel"] == 1).all()


def test_passages_of_an_entity_are_hard_negatives(sample_dir):
    """The answer names its entity, and other passages about the same entity exist (same name, other facts)."""
    plan = plan_world(seed=7, **SIZE)
    texts = read_table(sample_dir / "collection.tsv", "collection").set_index("pid")["text"]
    names = {e: n for _, _, entity_names in iter_world(plan, 7) for e, n in entity_names.items()}
    qrels = read_table(sample_dir / "qrels.dev.small.tsv", "qrels")
    for (entity, _), pid in zip(plan.queries["dev"], qrels["pid"]):
        name = names[entity]
        assert name in texts[pid]
        assert texts.str.contains(name, regex=False).sum() >= 4


def test_train_and_dev_entities_are_disjoint(sample_dir):
    plan = plan_world(seed=7, **SIZE)
    family_of = plan.entity_family
    train = {e for e, _ in plan.queries["train"]}
    dev = {e for e, _ in plan.queries["dev"]}
    assert not train & dev
    assert not {family_of[e] for e in train} & {family_of[e] for e in dev}  # not even a sibling or sister town
    names = {e: n.lower() for _, _, entity_names in iter_world(plan, 7) for e, n in entity_names.items()}
    train_text = " | ".join(read_table(sample_dir / "queries.train.tsv", "queries")["text"])
    assert not [names[e] for e in dev if names[e] in train_text]


def test_queries_are_worded_unlike_their_answer(sample_dir):
    queries = read_table(sample_dir / "queries.dev.small.tsv", "queries").set_index("qid")["text"]
    qrels = read_table(sample_dir / "qrels.dev.small.tsv", "qrels")
    texts = read_table(sample_dir / "collection.tsv", "collection").set_index("pid")["text"]
    for qid, pid in zip(qrels["qid"], qrels["pid"]):
        assert queries[qid] not in texts[pid].lower()
        assert len(queries[qid].split()) <= 12


def test_names_stay_unique_in_a_large_world():
    plan = plan_world(60_000, 10, 10, seed=1)
    names = [n for _, _, entity_names in iter_world(plan, 1) for n in entity_names.values()]
    assert len(names) == len(set(names)) > 7_000


def test_too_many_queries_for_the_world_is_a_clear_error():
    with pytest.raises(InputError, match="raise --passages"):
        plan_world(100, 500, 10, seed=1)
    with pytest.raises(InputError, match="too small"):
        plan_world(10, 1, 1, seed=1)
