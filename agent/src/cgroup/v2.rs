//! Reading one cgroup v2 directory into the families.
//!
//! Not here: holding the files open (`files`), v1 (`v1`).

use super::families::fam;
use super::files::{Ctx, one_number, v2f};
use super::parse;

pub(super) fn read_v2(c: &mut Ctx<'_>, is_root: bool) {
    use v2f::*;
    let cpu = c.parse(CPU_STAT, |t| {
        parse::pick(
            t,
            [
                "usage_usec",
                "user_usec",
                "system_usec",
                "nr_periods",
                "nr_throttled",
                "throttled_usec",
            ],
        )
    });
    if let Some([usage, user, system, ..]) = cpu {
        c.need(
            CPU_STAT,
            fam::CPU_USAGE,
            usage.map(|v| v / 1e6),
            "usage_usec",
        );
        c.need(CPU_STAT, fam::CPU_USER, user.map(|v| v / 1e6), "user_usec");
        c.need(
            CPU_STAT,
            fam::CPU_SYSTEM,
            system.map(|v| v / 1e6),
            "system_usec",
        );
    }
    if !is_root {
        match c.watched(CPU_MAX, |t| parse::cpu_max(t).map(|(q, p)| [q, Some(p)])) {
            Some([Some(quota), Some(period)]) => {
                c.set(fam::SPEC_CPU_QUOTA, quota);
                c.set(fam::SPEC_CPU_PERIOD, period);
                // throttling figures only where a quota is set
                if let Some([_, _, _, periods, throttled, throttled_usec]) = cpu {
                    c.need(CPU_STAT, fam::CFS_PERIODS, periods, "nr_periods");
                    c.need(
                        CPU_STAT,
                        fam::CFS_THROTTLED_PERIODS,
                        throttled,
                        "nr_throttled",
                    );
                    c.need(
                        CPU_STAT,
                        fam::CFS_THROTTLED_SECONDS,
                        throttled_usec.map(|v| v / 1e6),
                        "throttled_usec",
                    );
                }
            }
            Some([None, Some(period)]) => c.set(fam::SPEC_CPU_PERIOD, period),
            _ => {}
        }
        // cAdvisor converts weight back to v1 shares.
        let shares = c
            .watched(CPU_WEIGHT, one_number)
            .and_then(|[w, _]| w)
            .map(|w| (2.0 + ((w - 1.0) * 262142.0) / 9999.0).floor());
        c.opt(fam::SPEC_CPU_SHARES, shares);
    }
    let stat = c.parse(MEM_STAT, |t| {
        parse::pick(t, ["anon", "file", "file_mapped", "inactive_file"])
    });
    // older kernels have no memory.stat at the v2 root: no figures, no error
    if is_root && !c.exists(MEM_STAT) {
        c.psi(PSI);
        return;
    }
    let usage = if is_root {
        // The root has no memory.current; the sum of the stat figures stands in.
        match stat {
            Some([Some(anon), Some(file), ..]) => Some(anon + file),
            Some(_) => {
                c.need(MEM_STAT, fam::MEM_USAGE, None, "anon/file");
                None
            }
            None => None,
        }
    } else {
        c.number(MEM_CURRENT)
    };
    if let Some(u) = usage {
        c.set(fam::MEM_USAGE, u);
        if let Some([.., inactive]) = stat {
            c.need(
                MEM_STAT,
                fam::MEM_WORKING_SET,
                inactive.map(|i| (u - i).max(0.0)),
                "inactive_file",
            );
        }
    }
    if let Some([anon, file, mapped, _]) = stat {
        c.need(MEM_STAT, fam::MEM_RSS, anon, "anon");
        c.need(MEM_STAT, fam::MEM_CACHE, file, "file");
        c.need(MEM_STAT, fam::MEM_MAPPED, mapped, "file_mapped");
    }
    if !is_root {
        let swap = if c.swap_off {
            Some(0.0)
        } else {
            c.number(MEM_SWAP)
        };
        c.opt(fam::MEM_SWAP, swap);
        let limit = c.watched(MEM_MAX, |t| {
            if t.trim_ascii() == b"max" {
                Ok([Some(0.0), None])
            } else {
                one_number(t)
            }
        });
        c.opt(fam::SPEC_MEM_LIMIT, limit.and_then(|[l, _]| l));
        if let Some([max, oom_kill]) =
            c.watched(MEM_EVENTS, |t| parse::pick(t, ["max", "oom_kill"]))
        {
            c.need(MEM_EVENTS, fam::MEM_FAILCNT, max, "max");
            c.need(MEM_EVENTS, fam::OOM_EVENTS, oom_kill, "oom_kill");
        }
        let threads = c.number(PIDS);
        c.opt(fam::THREADS, threads);
    }
    if let Some(io) = c.parse(IO, |t| parse::io_stat(t)) {
        for (k, v) in io.into_iter().enumerate() {
            c.set(fam::FS + k, v);
        }
    }
    c.psi(PSI);
}
