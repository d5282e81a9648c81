"""The `dora grid` table of zalo grids ranks XPs by CLAS with `zalo-music compare`'s rule (fake sheeps, real Dora)."""

from __future__ import annotations

import types

import pytest


def _sheep(sig: str):
    return types.SimpleNamespace(xp=types.SimpleNamespace(sig=sig), log=None, current_job_id=None,
                                 state=lambda: "COMPLETED", is_done=lambda: True)


def _monitor(histories: dict[str, list[dict]]) -> tuple[str, object]:
    from dora.grid import monitor

    from grids._explorers import ZaloExplorer

    explorer = ZaloExplorer(lambda launcher: None)
    main = types.SimpleNamespace(get_names=lambda xps: ([x.sig for x in xps], ""),
                                 get_xp_history=lambda xp: histories[xp.sig])
    printed: list[str] = []
    args = types.SimpleNamespace(trim=None, trim_last=False)
    monitor(args, main, explorer, [_sheep(s) for s in histories], lambda *a, **k: printed.append(" ".join(map(str, a))))
    return "\n".join(printed), explorer


def _rows(table: str) -> dict[str, str]:
    """Each XP's table line, colours stripped (the rank is its last column)."""
    import re

    plain = re.sub(r"\x1b\[[0-9;]*m", "", table)
    return {line.split()[1]: line.rstrip() for line in plain.splitlines() if re.match(r"\s*\d+\s+aaaa", line)}


def test_dora_grid_table_marks_the_best_xp_by_clas():
    from zalo_music.gridlocal import rank

    def entry(ce: float, clas: float | None) -> list[dict]:
        e = {"train": {"ce": ce}, "valid": {"ce": ce}}
        if clas is not None:
            e["evaluate"] = {"clap": clas, "fad": 1.0, "fas": clas, "clas": clas}
        return [e]

    # the best XP comes last: the rows built before it must be re-ranked in place
    histories = {"aaaa0001": entry(3.0, 0.40), "aaaa0002": entry(2.0, None), "aaaa0003": entry(2.5, 0.55)}
    table, _ = _monitor(histories)
    rows = _rows(table)
    assert rows["aaaa0003"].endswith("0.5500  1 *"), table
    assert rows["aaaa0001"].endswith("0.4000    2") and rows["aaaa0002"].endswith(" -"), table
    assert rank([(0.40, 3.0), (None, 2.0), (0.55, 2.5)]) == [2, None, 1]  # the same rule as `compare`
    # no XP has CLAS yet: valid ce decides, lower first
    assert rank([(None, 3.0), (None, 2.0), (None, None)]) == [2, 1, None]


def test_a_second_monitoring_round_starts_a_new_ranking():
    histories = {"aaaa0001": [{"evaluate": {"clas": 0.5}}], "aaaa0002": [{"evaluate": {"clas": 0.6}}]}
    _, explorer = _monitor(histories)
    again = explorer.process_sheep(_sheep("aaaa0001"), histories["aaaa0001"])
    assert again["evaluate"]["rank"] == "1 *"  # alone in the new round, not ranked against the last one


@pytest.mark.parametrize("scores,expected", [([], []), ([(None, None)], [None]), ([(0.1, 9.0), (0.1, 1.0)], [1, 2])])
def test_rank_edge_cases(scores, expected):
    from zalo_music.gridlocal import rank

    assert rank(scores) == expected
