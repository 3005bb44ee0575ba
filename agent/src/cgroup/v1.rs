//! Reading one cgroup v1 cgroup (its directories in each controller's
//! hierarchy) into the families.
//!
//! Not here: holding the files open (`files`), v2 (`v2`).

use super::families::fam;
use super::files::{Ctx, one_number, v1f};
use super::parse;

pub(super) fn read_v1(c: &mut Ctx<'_>, is_root: bool) {
    use v1f::*;
    let usage = c.number(USAGE).map(|v| v / 1e9);
    c.opt(fam::CPU_USAGE, usage);
    // USER_HZ ticks; 100 on every Linux we ship to.
    if let Some([user, system]) = c.parse(ACCT_STAT, |t| parse::pick(t, ["user", "system"])) {
        c.need(ACCT_STAT, fam::CPU_USER, user.map(|v| v / 100.0), "user");
        c.need(
            ACCT_STAT,
            fam::CPU_SYSTEM,
            system.map(|v| v / 100.0),
            "system",
        );
    }
    if !is_root {
        let shares = c.watched(SHARES, one_number).and_then(|[v, _]| v);
        c.opt(fam::SPEC_CPU_SHARES, shares);
        let period = c.watched(PERIOD, one_number).and_then(|[v, _]| v);
        c.opt(fam::SPEC_CPU_PERIOD, period);
        if let Some([Some(q), _]) = c.watched(QUOTA, one_number)
            && q >= 0.0
        {
            c.set(fam::SPEC_CPU_QUOTA, q);
            let keys = ["nr_periods", "nr_throttled", "throttled_time"];
            if let Some([p, t, tt]) = c.parse(CPU_STAT, |s| parse::pick(s, keys)) {
                c.need(CPU_STAT, fam::CFS_PERIODS, p, keys[0]);
                c.need(CPU_STAT, fam::CFS_THROTTLED_PERIODS, t, keys[1]);
                c.need(
                    CPU_STAT,
                    fam::CFS_THROTTLED_SECONDS,
                    tt.map(|v| v / 1e9),
                    keys[2],
                );
            }
        }
    }
    c.psi(PSI);
    let usage = c.number(MEM_USAGE);
    let keys = [
        "total_inactive_file",
        "total_rss",
        "total_cache",
        "total_mapped_file",
        "total_swap",
    ];
    let stat = c.parse(MEM_STAT, |t| parse::pick(t, keys));
    if let Some(u) = usage {
        c.set(fam::MEM_USAGE, u);
        if let Some([inactive, ..]) = stat {
            c.need(
                MEM_STAT,
                fam::MEM_WORKING_SET,
                inactive.map(|i| (u - i).max(0.0)),
                keys[0],
            );
        }
    }
    if let Some([_, rss, cache, mapped, swap]) = stat {
        c.need(MEM_STAT, fam::MEM_RSS, rss, keys[1]);
        c.need(MEM_STAT, fam::MEM_CACHE, cache, keys[2]);
        c.need(MEM_STAT, fam::MEM_MAPPED, mapped, keys[3]);
        c.opt(fam::MEM_SWAP, swap);
    }
    let failcnt = c.number(FAILCNT);
    c.opt(fam::MEM_FAILCNT, failcnt);
    if !is_root {
        // The kernel reports "no limit" as a huge page-aligned number.
        let limit = c
            .watched(LIMIT, one_number)
            .and_then(|[l, _]| l)
            .map(|l| if l >= 9.0e18 { 0.0 } else { l });
        c.opt(fam::SPEC_MEM_LIMIT, limit);
    }
    if let Some([kills]) = c.parse(OOM_CONTROL, |t| parse::pick(t, ["oom_kill"])) {
        c.opt(fam::OOM_EVENTS, kills);
    }
    if !is_root {
        let threads = c.parse(TASKS, |t| Ok(parse::count_lines(t) as f64));
        c.opt(fam::THREADS, threads);
    }
    for (file, family) in [(BLKIO_BYTES, fam::FS), (BLKIO_OPS, fam::FS + 2)] {
        if let Some((r, w)) = c.parse(file, |t| parse::blkio(t)) {
            c.set(family, r);
            c.set(family + 1, w);
        }
    }
}
