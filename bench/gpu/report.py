"""Merges the GPU check's two measurements (bench/gpu/bench.ts, bench/gpu/torch_bench.py) into
one JSON and one Markdown table, with the targets of shared/docs/PERFORMANCE.md checked.

Usage: python3 bench/gpu/report.py KOALA_JSON TORCH_JSON OUT_JSON OUT_MD
"""
import json
import sys


def main():
    koala, torch_ = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
    base = {r["list"]: r for r in torch_["rows"]}
    rows, lines = [], []
    lines.append(f"# GPU check: the KOALA step on {torch_['device']} (torch {torch_['torch']})")
    lines.append("")
    lines.append("Produced by `bench/gpu/run.sh` (bench/README.md). float32; best of 5 batches per contender. "
                 "GB/s counts KOALA-M 56, lazy 36, KOALA-V 20 bytes per parameter; the copy counts 8 (read and write). "
                 "The per-layer torch approach restates the official code (element-wise ops per tensor, host reads of the norms).")
    lines.append("")
    lines.append("| list | params | tensors | contender | ms/step | GB/s | % of copy | vs per-layer torch KOALA-M | time / fused AdamW |")
    lines.append("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for t in koala["timings"]:
        b = base[t["list"]]
        ms = min(t["msPerStep"])
        gbs = t["bytesPerParam"] * t["params"] / (ms / 1e3) / 1e9
        copy_gbs = 8 * t["params"] / (min(b["copyMs"]) / 1e3) / 1e9
        row = {**{k: t[k] for k in ("list", "params", "tensors", "contender")}, "ms": ms, "gbs": gbs,
               "fractionOfCopy": gbs / copy_gbs, "speedupOverPerLayer": min(b["officialKoalaMMs"]) / ms,
               "ratioToFusedAdamW": ms / min(b["fusedAdamWMs"])}
        rows.append(row)
        lines.append(f"| {t['list']} | {t['params']:,} | {t['tensors']} | {t['contender']} | {ms:.4f} | {gbs:.0f} | "
                     f"{100 * row['fractionOfCopy']:.0f}% | {row['speedupOverPerLayer']:.0f}x | {row['ratioToFusedAdamW']:.2f} |")
    lines.append("")
    km = [r for r in rows if r["contender"] == "KOALA-M"]
    big = [r for r in rows if r["params"] >= 16e6 and r["contender"] in ("KOALA-M", "KOALA-M lazy")]
    resnet = [r for r in km if r["list"].startswith("ResNet-50")]
    lines.append("## Checks")
    lines.append("")
    if big:
        lines.append(f"- KOALA-M (standard and lazy) at >= 16M parameters: at least {100 * min(r['fractionOfCopy'] for r in big):.0f}% of the copy bandwidth (target 80%).")
    if resnet:
        lines.append(f"- ResNet-50 list: {resnet[0]['ms']:.3f} ms per KOALA-M step (target <= 0.45 ms on an H200).")
    lines.append(f"- KOALA-M against the per-layer torch approach: at least {min(r['speedupOverPerLayer'] for r in km):.0f}x faster (target 20x).")
    json.dump({"device": torch_["device"], "torch": torch_["torch"], "rows": rows}, open(sys.argv[3], "w"), indent=2)
    open(sys.argv[4], "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
