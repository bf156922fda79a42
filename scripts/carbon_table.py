"""Derive src/joulecast/data/carbon_intensity.csv from CodeCarbon's per-country energy mix.

Usage: python scripts/carbon_table.py global_energy_mix.json > carbon_intensity.csv

The input is codecarbon/data/private_infra/global_energy_mix.json of the public repository
mlco2/codecarbon (the shipped table was made from commit
0963f17527d0a89262eb849946ca7af4d0f9434c). Its records hold, per ISO 3166-1 alpha-3 code,
``country_name``, ``carbon_intensity`` (gCO2e/kWh of electricity generated) and ``year``;
those four fields are copied, nothing is computed. Records without a finite intensity are
left out.
"""

from __future__ import annotations

import csv
import json
import math
import sys

HEADER = """\
# Carbon intensity of electricity generation by country, gCO2e/kWh, year {year}.
# Derived by scripts/carbon_table.py from the repository mlco2/codecarbon, file
# codecarbon/data/private_infra/global_energy_mix.json, commit {commit}
# (fields iso_code, country_name, carbon_intensity, year, copied unchanged).
# Upstream: Our World in Data energy data (Ember; Energy Institute Statistical Review),
# CC BY 4.0. See README.md beside this file.
"""


def rows(mix: dict[str, dict[str, object]]) -> list[tuple[str, str, float, int]]:
    """(code, country, g_per_kwh, year) of every record with a finite intensity, by code."""
    out = []
    for code, record in sorted(mix.items()):
        value = record.get("carbon_intensity")
        if isinstance(value, (int, float)) and math.isfinite(value):
            out.append((code, str(record["country_name"]), float(value), int(record["year"])))
    return out


def main(argv: list[str]) -> int:
    (path,) = argv
    with open(path, encoding="utf-8") as fh:
        # the file holds bare NaN, which json reads as float('nan')
        table = rows(json.load(fh))
    years = sorted({r[3] for r in table})
    commit = "0963f17527d0a89262eb849946ca7af4d0f9434c"
    sys.stdout.write(HEADER.format(year="/".join(map(str, years)), commit=commit))
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["code", "country", "g_per_kwh", "year"])
    for code, country, value, year in table:
        writer.writerow([code, country, repr(value), year])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
