"""Summarize one results folder, or several merged, as the paper's Table 1 and Figure 1 (with the
four claims on that seed and the curves of training), check the claims and the 2 x 2 ablation over
several seeds' folders, or tabulate min / max / mean AUROC over seeds of eval_ood.py results (Haas et al.,
TMLR 2022, Tables 4 and 5), or compare baseline and ours detector by detector over seeds (the
detector zoo), or the entropy weight's sweep (the control knob); see study/summary.py,
study/claims.py, study/zoo.py and study/knob.py.

    python summarize.py --results results/demo --runs runs/demo
    python summarize.py --results results/resnet18_in100_baseline results/resnet18_in100_nc --out_dir results/paper
    python summarize.py --seeds results/seed0 results/seed1 results/seed2 --out_dir results/claims
    python summarize.py --sweep results/sweep/epochs10 results/sweep/epochs20 --out_dir results/sweep
    python summarize.py --ood_seeds results/ddu/seed*/baseline.json --out_dir results/ddu
    python summarize.py --zoo results/ood_zoo/seed*/ood.json --out_dir results/ood_zoo
    python summarize.py --knob results/sweep_alpha/seed0 results/sweep_alpha/seed1 --out_dir results/sweep_alpha
"""
import argparse

from core.errors import cli_main
from study.summary import summarize, summarize_ood_seeds, summarize_seeds
from study.knob import summarize_knob
from study.sweep import summarize_sweep
from study.zoo import summarize_zoo


@cli_main
def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--results", nargs="+", metavar="DIR",
                      help="folder(s) holding nc.json, ood.json and linear_probe.json; several make one table "
                           "(with --out_dir), e.g. the paper chain's results/<expt_name> folders")
    what.add_argument("--seeds", nargs="+", help="summarized results folders of several seeds: check the claims")
    what.add_argument("--sweep", nargs="+", metavar="STUDY",
                      help="study folders of scripts/reproduce_embedded.sh at different EPOCHS: the training-length sweep")
    what.add_argument("--ood_seeds", nargs="+", metavar="JSON",
                      help="ood.json files of eval_ood.py, one or more per seed: min / max / mean over seeds")
    what.add_argument("--knob", nargs="+", metavar="DIR",
                      help="summarized seed folders of scripts/sweep_alpha.sh: the entropy weight's sweep and the "
                           "normalization pairings")
    what.add_argument("--zoo", nargs="+", metavar="JSON",
                      help="one ood.json per seed scoring 'baseline' and 'ours' with many detectors "
                           "(scripts/ood_zoo.sh): which detectors gain from collapse control")
    p.add_argument("--runs", default=None,
                   help="with --results: folder of the training logs (<model>.log.jsonl), for nc1_over_training.png")
    p.add_argument("--out_dir", default=None, help="where to write (default: the results folder)")
    p.add_argument("--scorer", default="energy", help="the OOD scorer whose FPR95 goes into the table")
    p.add_argument("--metric", default="auroc", help="the metric tabulated over seeds by --ood_seeds")
    args = p.parse_args(argv)
    if args.knob:
        return summarize_knob(args.knob, args.out_dir or "results/sweep_alpha")
    if args.zoo:
        return summarize_zoo(args.zoo, args.out_dir or "results/ood_zoo")
    if args.ood_seeds:
        return summarize_ood_seeds(args.ood_seeds, args.out_dir or "results/ood_seeds", args.metric)
    if args.sweep:
        return summarize_sweep(args.sweep, args.out_dir or "results/sweep")
    if args.seeds:
        return summarize_seeds(args.seeds, args.out_dir or "results/claims")
    return summarize(args.results, args.out_dir, args.scorer, runs=args.runs)


if __name__ == "__main__":
    main()
