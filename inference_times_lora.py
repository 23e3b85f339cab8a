"""Latency of a LoRA adapter against its base model: base, adapter unmerged and adapter merged, in one run.

An adapter left unmerged runs its low-rank matmuls beside every adapted layer on each call; merged into
the base weights it costs nothing extra and gives the same embeddings. This script shows both: the three
models are measured on the same workload, their order rotated each repeat so machine drift falls on all
alike, and it reports each one's figures, their time ratios to the base, and the largest embedding
difference between merged and unmerged (should be float rounding, about 1e-6). The search and the
end-to-end figures search the base model's passage embeddings (from the cache eval_model.py fills, or
the --max-passages slice): search time depends on the matrix's shape, not on which model made it.

    python inference_times_lora.py --model out/ft-lora \\
        --filtered-queries queries.dev.small.tsv --collection collection.tsv \\
        --output results/latency/lora-model.json

A quick CPU run: add --num-queries 32 --batch-sizes 1,8,32 --repeats 3 --max-passages 500
--throughput-passages 128 --warmup 1 --threads 1 (search over the first 500 passages only).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from msmarco_ft import cli, latency
from msmarco_ft.errors import InputError
from msmarco_ft.models import has_adapter, model_label, resolve_device, resolve_precision

log = logging.getLogger("inference_times_lora")
TARGET = 1.05  # merged within 5% of the base model's encoding time


@cli.script
def main(argv: list[str] | None = None) -> int:
    parser = cli.parser_for(__doc__)
    parser.add_argument("--model", required=True,
                        help="LoRA adapter folder, or a finetune.py --lora output folder (its model/ is used)")
    parser.add_argument("--base-model", default=None,
                        help="base model to compare with; default: the one named in the adapter's adapter_config.json")
    latency.add_workload_args(parser)
    parser.add_argument("--output", default=None,
                        help="JSON file to write (default results/latency/ADAPTER-lora.json)")
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    batch_sizes = latency.setup_run(args)
    adapter = str(latency.find_adapter(args.model))
    output = Path(args.output or f"results/latency/{model_label(args.model)}-lora.json")
    cli.refuse_overwrite([output], args.overwrite)

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    work = latency.build_workload(args, batch_sizes, device)
    models, load_s = {}, {}
    # The adapter loads first: loading it points its config at a reachable copy of the base.
    for name, merge in (("unmerged", False), ("merged", True)):
        models[name], load_s[name] = latency.measure_load(adapter, device, precision, merge_adapter=merge)
    if not has_adapter(models["unmerged"]) or has_adapter(models["merged"]):
        raise InputError(adapter, "the adapter did not load as an active LoRA adapter")
    base_name = args.base_model or latency.adapter_base(adapter)
    models["base"], load_s["base"] = latency.measure_load(base_name, device, precision)
    models = {name: models[name] for name in ("base", "unmerged", "merged")}

    differences = latency.max_differences(models, work.queries[:32] + work.passages[:32], args.batch_size)
    if differences["merged_vs_base"] == 0.0:
        log.warning("the adapter leaves every embedding unchanged (its LoRA B weights are zero); "
                    "the unmerged timing still includes the adapter's work")
    # Search cost does not depend on which model made the embeddings; the base model's are the ones
    # eval_model.py has most likely cached already.
    work.index = latency.build_index(models["base"], args, device)
    figures = latency.measure_models(models, work, args.repeats, args.warmup)
    for name, seconds in load_s.items():
        figures[name] = {"load_s": round(seconds, 4), **figures[name]}
    search = latency.measure_search(models["base"], work, args.repeats, args.warmup)
    ratios = latency.ratios_to(figures, "base")
    merged = ratios["merged"]["encode"]
    result = {"schema": latency.SCHEMA, "script": "inference_times_lora.py", "model": args.model,
              "label": model_label(args.model), "base_model": base_name, "backend": "torch", "device": device,
              "precision": precision, "settings": latency.settings(args, batch_sizes, work), "order": work.rounds,
              "variants": figures, "ratios": ratios, "max_abs_diff": differences,
              "merged_within_5pct": merged <= TARGET, "search": search, "hardware": latency.hardware_info(device)}

    cli.write_json(output, result)
    cli.write_config(output.parent, args, inputs={"queries": args.queries, "collection": args.collection},
                     name=f"{output.stem}.config.json")
    print(latency.format_comparison(figures, ratios))
    print(f"max |merged - unmerged| = {differences['merged_vs_unmerged']:.2e}; "
          f"max |merged - base| = {differences['merged_vs_base']:.2e}")
    print(f"merged / base encoding time {merged:.3f} ({'within' if merged <= TARGET else 'NOT within'} 5%); "
          f"unmerged / base {ratios['unmerged']['encode']:.3f}")
    log.info("wrote %s", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
