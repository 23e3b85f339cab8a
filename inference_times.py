"""Query latency of a dense retriever, each part timed on its own after warm-up.

Measures the model's load time, query encoding latency per batch size, exact search latency per query
block over the collection's embeddings (beside the bare matmul of the same shape), end-to-end latency of
single queries (encode + search, with the split), and collection encoding throughput; records the
hardware; prints a short table and writes one JSON file (schema in docs/latency.md).

    python inference_times.py --model sentence-transformers/all-MiniLM-L6-v2 \\
        --filtered-queries queries.dev.small.tsv --collection collection.tsv \\
        --output results/latency/all-MiniLM-L6-v2.json

A one-minute run on a small CPU (search over the first 2,000 passages):

    python inference_times.py --filtered-queries data/sample/queries.dev.small.tsv \\
        --collection data/sample/collection.tsv --num-queries 64 --batch-sizes 1,8,32 --repeats 2 \\
        --max-passages 2000 --throughput-passages 256 --output out/latency.json
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from msmarco_ft import cli, latency
from msmarco_ft.models import DEFAULT_MODEL, model_label, resolve_device, resolve_precision

log = logging.getLogger("inference_times")


@cli.script
def main(argv: list[str] | None = None) -> int:
    parser = cli.parser_for(__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or folder (a LoRA adapter folder too)")
    latency.add_workload_args(parser)
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                        help="onnx: also measure sentence-transformers' ONNX backend beside torch (needs optimum "
                             "and onnxruntime; when they are missing it says so and measures torch alone)")
    parser.add_argument("--output", default=None, help="JSON file to write (default results/latency/MODEL.json)")
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    batch_sizes = latency.setup_run(args)
    output = Path(args.output or f"results/latency/{model_label(args.model)}.json")
    cli.refuse_overwrite([output], args.overwrite)
    onnx_skipped = latency.onnx_missing() if args.backend == "onnx" else None
    if onnx_skipped:
        print(onnx_skipped, file=sys.stderr)

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    work = latency.build_workload(args, batch_sizes, device)
    model, load_s = latency.measure_load(args.model, device, precision)
    work.index = latency.build_index(model, args, device)
    figures = latency.measure_models({"torch": model}, work, args.repeats, args.warmup)["torch"]
    search = latency.measure_search(model, work, args.repeats, args.warmup)
    result = {"schema": latency.SCHEMA, "script": "inference_times.py", "model": args.model,
              "label": model_label(args.model), "backend": "torch", "device": device, "precision": precision,
              "settings": latency.settings(args, batch_sizes, work), "load_s": round(load_s, 4), **figures,
              "search": search, "hardware": latency.hardware_info(device)}
    tables = [latency.format_table(f"{result['label']} (torch, {device}, {precision})", result, search)]
    if args.backend == "onnx":
        result["onnx"] = {"skipped": onnx_skipped} if onnx_skipped else latency.measure_onnx(args.model, work, args)
        if not onnx_skipped:
            tables.append(latency.format_table(f"{result['label']} (onnx, {device})", result["onnx"], None))

    cli.write_json(output, result)
    cli.write_config(output.parent, args, inputs={"queries": args.queries, "collection": args.collection},
                     name=f"{output.stem}.config.json")
    print("\n\n".join(tables))
    log.info("wrote %s", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
