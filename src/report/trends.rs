//! The trends: the days of the data (the first and the last partial), runs per day over all
//! workflows, and one row of daily values per workflow (the busiest, regressed ones first) for
//! the sparklines.

use chrono::{Datelike, NaiveDate};
use polars::prelude::*;

use super::view::{Cell, TREND_WORKFLOWS, WORKFLOW, bool_at, cell, f64_at, text_at};

/// One workflow's row of trends: values per day of [`Page::days`] (`None`: no runs that day).
#[derive(Debug, Clone)]
pub struct Trend {
    pub workflow: Cell,
    pub runs: f64,
    pub error_rate: Option<f64>,
    pub p95_s: Option<f64>,
    pub regressed: bool,
    pub runs_per_day: Vec<Option<f64>>,
    pub error_rate_per_day: Vec<Option<f64>>,
    pub p95_per_day: Vec<Option<f64>>,
}

/// Every day from the first to the last of `daily_trends`, and whether it is complete (its
/// `complete` column: only the first and the last day of the whole data are partial, whatever
/// the scope; a day without runs inside them is complete).
pub fn days(daily: &DataFrame) -> Vec<(NaiveDate, bool)> {
    let Ok(column) = daily.column("day").and_then(|c| c.date().cloned()) else {
        return Vec::new();
    };
    let physical = column.physical();
    let (Some(first), Some(last)) = (physical.min(), physical.max()) else {
        return Vec::new();
    };
    let partial: std::collections::HashSet<i32> = (0..daily.height())
        .filter(|i| !bool_at(daily, "complete", *i))
        .filter_map(|i| physical.get(i))
        .collect();
    (first..=last)
        .filter_map(|d| {
            let day = NaiveDate::from_num_days_from_ce_opt(d + 719_163)?;
            debug_assert_eq!(epoch_days(day), d);
            Some((day, !partial.contains(&d)))
        })
        .collect()
}

/// Days since 1970-01-01, as Polars stores dates.
fn epoch_days(day: NaiveDate) -> i32 {
    day.num_days_from_ce() - 719_163
}

/// The position in `days` of row `i` of a table with a `day` column.
fn day_index(days: &[(NaiveDate, bool)], daily: &DataFrame, i: usize) -> Option<usize> {
    let day = daily.column("day").ok()?.date().ok()?.physical().get(i)?;
    let offset = day - epoch_days(days.first()?.0);
    usize::try_from(offset).ok().filter(|o| *o < days.len())
}

pub fn all_runs_per_day(daily: &DataFrame, days: &[(NaiveDate, bool)]) -> Vec<(f64, f64)> {
    let mut out = vec![(0.0, 0.0); days.len()];
    for i in 0..daily.height() {
        if let Some(d) = day_index(days, daily, i) {
            out[d].0 += f64_at(daily, "runs", i).unwrap_or(0.0);
            out[d].1 += f64_at(daily, "failed", i).unwrap_or(0.0);
        }
    }
    out
}

pub fn trends(
    summary: &DataFrame,
    daily: &DataFrame,
    regressions: &DataFrame,
    days: &[(NaiveDate, bool)],
) -> Vec<Trend> {
    let regressed: Vec<String> = (0..regressions.height())
        .filter(|i| bool_at(regressions, "regressed", *i))
        .filter_map(|i| text_at(regressions, "workflow_id", i))
        .collect();
    // Regressed workflows first, then the busiest (`workflow_summary`'s order), up to the limit.
    let mut order: Vec<usize> = (0..summary.height()).collect();
    order.sort_by_key(|i| {
        let id = text_at(summary, "workflow_id", *i).unwrap_or_default();
        !regressed.contains(&id)
    });
    order.truncate(TREND_WORKFLOWS);
    let mut rows: Vec<Trend> = order
        .iter()
        .map(|&i| {
            let id = text_at(summary, "workflow_id", i).unwrap_or_default();
            Trend {
                workflow: cell(summary, &WORKFLOW, i),
                runs: f64_at(summary, "runs", i).unwrap_or(0.0),
                error_rate: f64_at(summary, "error_rate", i),
                p95_s: f64_at(summary, "p95_s", i),
                regressed: regressed.contains(&id),
                runs_per_day: vec![None; days.len()],
                error_rate_per_day: vec![None; days.len()],
                p95_per_day: vec![None; days.len()],
            }
        })
        .collect();
    let ids: Vec<String> = order
        .iter()
        .map(|i| text_at(summary, "workflow_id", *i).unwrap_or_default())
        .collect();
    for i in 0..daily.height() {
        let (Some(id), Some(d)) = (text_at(daily, "workflow_id", i), day_index(days, daily, i))
        else {
            continue;
        };
        if let Some(row) = ids.iter().position(|w| *w == id) {
            rows[row].runs_per_day[d] = f64_at(daily, "runs", i);
            rows[row].error_rate_per_day[d] = f64_at(daily, "error_rate", i);
            rows[row].p95_per_day[d] = f64_at(daily, "p95_s", i);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_and_last_days_are_partial_and_gaps_are_filled() {
        let day = |d: &str| d.parse::<NaiveDate>().unwrap();
        let daily = df!("day" => [day("2026-11-01"), day("2026-11-02"), day("2026-11-04")],
                        "runs" => [3_i64, 10, 4], "failed" => [0_i64, 1, 2],
                        "complete" => [false, true, false])
        .unwrap();
        let days = days(&daily);
        assert_eq!(
            days,
            [
                (day("2026-11-01"), false),
                (day("2026-11-02"), true),
                (day("2026-11-03"), true),
                (day("2026-11-04"), false)
            ]
        );
        assert_eq!(
            all_runs_per_day(&daily, &days),
            [(3.0, 0.0), (10.0, 1.0), (0.0, 0.0), (4.0, 2.0)]
        );
        // A regressed workflow outside the busiest still gets its row, first.
        let ids: Vec<String> = (0..30).map(|i| format!("w{i:02}")).collect();
        let summary = df!("workflow_id" => ids.clone(), "name" => ids.clone(),
                          "runs" => (0..30).map(|i| 100 - i as i64).collect::<Vec<_>>())
        .unwrap();
        let regressions = df!("workflow_id" => ["w28"], "regressed" => [true]).unwrap();
        let rows = trends(&summary, &daily, &regressions, &days);
        assert_eq!(rows.len(), TREND_WORKFLOWS);
        assert_eq!(rows[0].workflow.text, "w28");
        assert!(rows[0].regressed && !rows[1].regressed);
        assert_eq!(rows[1].workflow.text, "w00");
        // A scope that cuts inside the data: its first and last days are whole days.
        let scoped = df!("day" => [day("2026-11-02"), day("2026-11-03")],
                         "complete" => [true, true])
        .unwrap();
        assert!(super::days(&scoped).iter().all(|(_, complete)| *complete));
    }
}
