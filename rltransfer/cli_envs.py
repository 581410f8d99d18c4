"""``rltransfer envs``: the families, their parameters, held-out bands, variants and Gymnasium ids."""

from __future__ import annotations

import argparse
import json


def cmd_envs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from rltransfer.envs import FAMILIES

    families = [args.family] if args.family else list(FAMILIES.values())
    if args.json:
        out = []
        for fam in families:
            out.append(
                {
                    "family": fam.name,
                    "threshold": fam.threshold,
                    "max_episode_steps": fam.max_episode_steps,
                    "params": [vars(p) for p in fam.params],
                    "held_out": {k: list(v) for k, v in fam.held_out.items()},
                    "variants": [
                        {
                            "name": v.name,
                            "distance": v.distance,
                            "params": dict(v.params),
                            "id": fam.env_id(v),
                        }
                        for v in (*fam.variants, *fam.held_out_variants())
                    ],
                }
            )
        print(json.dumps(out, indent=2))
        return 0
    console = Console(width=max(Console().width, 110))
    for fam in families:
        params = Table(title=f"{fam.name}: parameters (threshold {fam.threshold:g})", title_justify="left")
        for col in ("parameter", "default", "valid range", "held-out band", "meaning"):
            params.add_column(col)
        for p in fam.params:
            band = fam.held_out.get(p.name)
            # escape: units in brackets ("[m/s^2]") would otherwise be read as rich markup and vanish
            cells = [f"[{p.low:g}, {p.high:g}]", "" if band is None else f"[{band[0]:g}, {band[1]:g}]", p.doc]
            params.add_row(p.name, f"{p.default:g}", *map(escape, cells))
        variants = Table(title=f"{fam.name}: variants", title_justify="left")
        for col in ("variant", "distance", "changes", "gymnasium id"):
            variants.add_column(col)
        for v in (*fam.variants, *fam.held_out_variants()):
            changes = ", ".join(f"{k}={val:g}" for k, val in v.params.items()) or "(defaults)"
            variants.add_row(v.name, v.distance, changes, fam.env_id(v))
        console.print(params)
        if fam.held_out:
            console.print("  nothing trains where every held-out parameter lies in its band (`rltransfer generalize`)")
        console.print(variants)
    if not args.family:
        console.print("Your own: --family module:ATTRIBUTE (a rltransfer.envs.Family) or a YAML file (README).")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("envs", help="list families, variants and parameters")
    p.add_argument("--family", help="only this family (a name; your own as module:ATTRIBUTE or a YAML file)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_envs)
