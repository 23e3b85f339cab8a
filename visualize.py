"""Draw what fine-tuning did to the embedding space: UMAP of queries, their positives and hard negatives.

Samples N queries (seeded) that have a judged positive, takes each one's positive and hard negatives
(ranks 50-200 of --run, or random passages without a run), embeds them with every model, projects
with UMAP and writes NAME.png per model plus comparison.png side by side, with the mean query-positive
and query-negative cosine (and their gap) per model in cosine_stats.json and a printed table.

  python visualize.py --models sentence-transformers/all-MiniLM-L6-v2 out/demo/models/full-hard \\
      --names base full-hard --queries data/sample/queries.dev.small.tsv \\
      --collection data/sample/collection.tsv --qrels data/sample/qrels.dev.small.tsv \\
      --run out/demo/eval/base/run.parquet --num-queries 100 --output-dir out/demo/umap
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from msmarco_ft import cli, visual
from msmarco_ft.errors import InputError
from msmarco_ft.formats import read_table
from msmarco_ft.models import DEFAULT_MODEL, load_model, model_label

log = logging.getLogger("visualize")


def build_parser():
    parser = cli.parser_for(__doc__)
    parser.add_argument("--models", nargs="+", default=[DEFAULT_MODEL],
                        help="models to compare: hub names, model folders or LoRA adapter folders")
    parser.add_argument("--names", nargs="+", help="one label per model (default: the folder or hub name)")
    parser.add_argument("--queries", default="data/sample/queries.dev.small.tsv", help="queries file")
    parser.add_argument("--collection", default="data/sample/collection.tsv", help="collection file")
    parser.add_argument("--qrels", default="data/sample/qrels.dev.small.tsv", help="qrels for the queries")
    parser.add_argument("--run", help="a run over the same queries: hard negatives come from its ranks "
                                      "--rank-min..--rank-max (without it: random collection passages)")
    parser.add_argument("--num-queries", type=int, default=100, help="queries to sample")
    parser.add_argument("--negatives-per-query", type=int, default=2, help="negatives drawn per query")
    parser.add_argument("--rank-min", type=int, default=50, help="first run rank a hard negative may have")
    parser.add_argument("--rank-max", type=int, default=200, help="last run rank a hard negative may have")
    parser.add_argument("--fit", default="shared", choices=["shared", "per-model"],
                        help="shared: one UMAP over every model's points, so maps are comparable; per-model: one each")
    parser.add_argument("--n-neighbors", type=int, default=15, help="UMAP neighbours (capped by the point count)")
    parser.add_argument("--n-epochs", type=int, default=200, help="UMAP optimisation epochs (lower is faster)")
    parser.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist")
    parser.add_argument("--seed", type=int, default=42, help="seed for sampling and UMAP")
    parser.add_argument("--batch-size", type=int, default=64, help="encoding batch size")
    parser.add_argument("--output-dir", default="results/umap", help="folder for the PNGs and cosine_stats.json")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    cli.add_device_args(parser)
    return parser


def _labels(models: list[str], names: list[str] | None) -> list[str]:
    if names and len(names) != len(models):
        raise InputError(None, f"--names gives {len(names)} label(s) for {len(models)} model(s)")
    labels = names or [model_label(m) for m in models]
    if len(set(labels)) != len(labels) or "comparison" in labels:
        raise InputError(None, f"model labels must be distinct and not 'comparison' ({', '.join(labels)}); "
                               "pass other --names")
    return labels


@cli.script
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    if args.num_queries < 1 or args.negatives_per_query < 1:
        raise InputError(None, "--num-queries and --negatives-per-query must be at least 1")
    names = _labels(args.models, args.names)
    out = Path(args.output_dir)
    outputs = [out / f"{name}.png" for name in names] + [out / "comparison.png",
                                                              out / "cosine_stats.json"]
    cli.refuse_overwrite(outputs, args.overwrite)

    queries = read_table(args.queries, "queries")
    qrels = read_table(args.qrels, "qrels")
    run = read_table(args.run, "run") if args.run else None
    sample = visual.sample_points(queries, qrels, args.collection, run, args.num_queries, args.negatives_per_query,
                                  args.rank_min, args.rank_max, args.seed)
    log.info("%d queries, %d positives, %d negatives (%s)", len(sample.queries), len(sample.positives),
             len(sample.negatives), sample.negative_source)

    from msmarco_ft.search import encode_texts

    embeddings, stats = [], []
    for model_name, name in zip(args.models, names):
        model = load_model(model_name, args.device, args.precision)
        emb = encode_texts(model, sample.texts(), args.batch_size)
        embeddings.append(emb)
        stats.append({"name": name, "model": model_name, **visual.cosine_stats(emb, sample)})
        del model

    coords = visual.project(embeddings, args.fit, args.n_neighbors, args.n_epochs, args.min_dist, args.seed)
    caption = (f"{len(sample.queries)} queries from {Path(args.queries).name}, negatives: {sample.negative_source}; "
               f"UMAP ({args.fit} fit, cosine, n_neighbors {args.n_neighbors}, seed {args.seed})")
    for xy, name, stat in zip(coords, names, stats):
        visual.save_model_png(out / f"{name}.png", xy, sample, name, stat, caption)
    visual.save_comparison_png(out / "comparison.png", coords, sample, names, stats, caption,
                               shared=args.fit == "shared")
    cli.write_json(out / "cosine_stats.json", {"models": stats, "sample": sample.stats, "fit": args.fit,
                                               "negatives": sample.negative_source})
    cli.write_config(out, args, inputs={"queries": args.queries, "collection": args.collection,
                                        "qrels": args.qrels, "run": args.run})

    width = max(len(n) for n in names)
    print(f"{'model':<{width}}  cos(q,pos)  cos(q,neg)     gap  pos>all neg")
    for stat in stats:
        print(f"{stat['name']:<{width}}  {stat['mean_cos_query_positive']:10.4f}  "
              f"{stat['mean_cos_query_negative']:10.4f}  {stat['gap']:+.4f}  {stat['positive_beats_negatives']:11.1%}")
    print(f"wrote {out / 'comparison.png'} and {len(names)} per-model PNG(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
