//! Binary operators: arithmetic, comparisons (filtering or `bool`) and set
//! operators, between scalars and vectors, with vector matching (`on`,
//! `ignoring`, `group_left`/`group_right`) as Prometheus does it.
//!
//! Not here: evaluating the operands (the evaluator, called back).

use std::collections::HashMap;

use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use vigil_common::Labels;

use super::eval::Evaluator;
use super::value::{Result, Val, drop_name};
use super::{QueryError, Sample};
use crate::gofmt::labels_string;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn parse(s: &str) -> Result<Op> {
        Ok(match s {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "and" => Op::And,
            "or" => Op::Or,
            "unless" => Op::Unless,
            other => {
                return Err(QueryError::exec(format!(
                    "unknown binary operator {other:?}"
                )));
            }
        })
    }

    fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }

    /// Prometheus' `shouldDropMetricName`: arithmetic except `atan2`.
    fn drops_name(self) -> bool {
        matches!(
            self,
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow | Op::Mod
        )
    }

    fn is_set(self) -> bool {
        matches!(self, Op::And | Op::Or | Op::Unless)
    }
}

fn elem(op: Op, l: f64, r: f64) -> (f64, bool) {
    match op {
        Op::Add => (l + r, true),
        Op::Sub => (l - r, true),
        Op::Mul => (l * r, true),
        Op::Div => (l / r, true),
        Op::Mod => (l % r, true),
        Op::Pow => (l.powf(r), true),
        Op::Atan2 => (l.atan2(r), true),
        Op::Eq => (l, l == r),
        Op::Ne => (l, l != r),
        Op::Gt => (l, l > r),
        Op::Lt => (l, l < r),
        Op::Ge => (l, l >= r),
        Op::Le => (l, l <= r),
        Op::And | Op::Or | Op::Unless => (f64::NAN, false),
    }
}

/// Hash of the labels that decide matching: `on` lists them, otherwise all
/// but the listed ones and `__name__`.
fn signature(l: &Labels, on: bool, names: &[String]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    if on {
        for n in names {
            h.update(n.as_bytes());
            h.update(&[0xff]);
            h.update(l.get(n).unwrap_or("").as_bytes());
            h.update(&[0xff]);
        }
    } else {
        for (k, v) in l.iter() {
            if k == "__name__" || names.iter().any(|n| n == k) {
                continue;
            }
            h.update(k.as_bytes());
            h.update(&[0xff]);
            h.update(v.as_bytes());
            h.update(&[0xff]);
        }
    }
    h.digest()
}

fn match_labels(l: &Labels, on: bool, names: &[String]) -> Labels {
    Labels::from_sorted_unchecked(
        l.iter()
            .filter(|(k, _)| {
                if on {
                    names.iter().any(|n| n == k)
                } else {
                    *k != "__name__" && !names.iter().any(|n| n == k)
                }
            })
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

impl Evaluator<'_> {
    pub(super) fn binary(&self, b: &BinaryExpr, t: i64) -> Result<Val> {
        let op = Op::parse(&b.op.to_string())?;
        let return_bool = b.return_bool();
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                let (v, keep) = elem(op, l, r);
                Ok(Val::Scalar(if op.is_comparison() {
                    if keep { 1.0 } else { 0.0 }
                } else {
                    v
                }))
            }
            (Val::Vector(v), Val::Scalar(s)) => {
                Ok(Val::Vector(vector_scalar(op, v, s, false, return_bool)))
            }
            (Val::Scalar(s), Val::Vector(v)) => {
                Ok(Val::Vector(vector_scalar(op, v, s, true, return_bool)))
            }
            (Val::Vector(l), Val::Vector(r)) => {
                let (card, on, names) = match &b.modifier {
                    None => (VectorMatchCardinality::OneToOne, false, Vec::new()),
                    Some(m) => {
                        let (on, names) = match &m.matching {
                            None => (false, Vec::new()),
                            Some(LabelModifier::Include(ls)) => (true, ls.labels.clone()),
                            Some(LabelModifier::Exclude(ls)) => (false, ls.labels.clone()),
                        };
                        (m.card.clone(), on, names)
                    }
                };
                if op.is_set() {
                    return Ok(Val::Vector(set_op(op, l, r, on, &names)));
                }
                let out = vector_binop(op, l, r, &card, on, &names, return_bool)?;
                Ok(Val::Vector(out))
            }
            (l, r) => Err(QueryError::exec(format!(
                "invalid operand types for binary operator: {} and {}",
                l.type_name(),
                r.type_name()
            ))),
        }
    }
}

fn vector_scalar(op: Op, v: Vec<Sample>, s: f64, swap: bool, return_bool: bool) -> Vec<Sample> {
    let mut out = Vec::with_capacity(v.len());
    for smp in v {
        let (lv, rv) = if swap { (s, smp.v) } else { (smp.v, s) };
        let (mut val, keep) = elem(op, lv, rv);
        if op.is_comparison() && swap {
            val = rv;
        }
        if return_bool {
            val = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        let labels = if op.drops_name() || return_bool {
            drop_name(smp.labels)
        } else {
            smp.labels
        };
        out.push(Sample {
            labels,
            t: smp.t,
            v: val,
        });
    }
    out
}

fn set_op(op: Op, l: Vec<Sample>, r: Vec<Sample>, on: bool, names: &[String]) -> Vec<Sample> {
    match op {
        Op::And => {
            let rs: std::collections::HashSet<u64> =
                r.iter().map(|s| signature(&s.labels, on, names)).collect();
            l.into_iter()
                .filter(|s| rs.contains(&signature(&s.labels, on, names)))
                .collect()
        }
        Op::Unless => {
            let rs: std::collections::HashSet<u64> =
                r.iter().map(|s| signature(&s.labels, on, names)).collect();
            l.into_iter()
                .filter(|s| !rs.contains(&signature(&s.labels, on, names)))
                .collect()
        }
        _ => {
            let ls: std::collections::HashSet<u64> =
                l.iter().map(|s| signature(&s.labels, on, names)).collect();
            let mut out = l;
            out.extend(
                r.into_iter()
                    .filter(|s| !ls.contains(&signature(&s.labels, on, names))),
            );
            out
        }
    }
}

fn vector_binop(
    op: Op,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    card: &VectorMatchCardinality,
    on: bool,
    names: &[String],
    return_bool: bool,
) -> Result<Vec<Sample>> {
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let include: Vec<String> = card.labels().map(|l| l.labels.clone()).unwrap_or_default();
    let (lhs, rhs) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let mut right: HashMap<u64, &Sample> = HashMap::with_capacity(rhs.len());
    for rs in &rhs {
        let h = signature(&rs.labels, on, names);
        if let Some(dup) = right.get(&h) {
            let side = if one_to_many { "left" } else { "right" };
            return Err(QueryError::exec(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                labels_string(match_labels(&rs.labels, on, names).iter()),
                labels_string(rs.labels.iter()),
                labels_string(dup.labels.iter()),
            )));
        }
        right.insert(h, rs);
    }
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut matched: HashMap<u64, std::collections::HashSet<Labels>> = HashMap::new();
    let mut out = Vec::new();
    for ls in lhs {
        let sig = signature(&ls.labels, on, names);
        let Some(rs) = right.get(&sig) else { continue };
        let (fl, fr) = if one_to_many {
            (rs.v, ls.v)
        } else {
            (ls.v, rs.v)
        };
        let (mut v, keep) = elem(op, fl, fr);
        if return_bool {
            v = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        // result labels
        let mut pairs: Vec<(String, String)> = ls.labels.into_pairs();
        if op.drops_name() || return_bool {
            pairs.retain(|(k, _)| k != "__name__");
        }
        if one_to_one {
            if on {
                pairs.retain(|(k, _)| names.iter().any(|n| n == k));
            } else {
                pairs.retain(|(k, _)| !names.iter().any(|n| n == k));
            }
        }
        for ln in &include {
            pairs.retain(|(k, _)| k != ln);
            if let Some(val) = rs.labels.get(ln)
                && !val.is_empty()
            {
                pairs.push((ln.clone(), val.to_string()));
            }
        }
        pairs.sort();
        let metric = Labels::from_sorted_unchecked(pairs);
        let entry = matched.entry(sig);
        if one_to_one {
            if let std::collections::hash_map::Entry::Occupied(_) = entry {
                return Err(QueryError::exec(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                ));
            }
            entry.or_default();
        } else {
            let set = entry.or_default();
            if !set.insert(metric.clone()) {
                return Err(QueryError::exec(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                ));
            }
        }
        out.push(Sample {
            labels: metric,
            t: ls.t,
            v,
        });
    }
    Ok(out)
}
