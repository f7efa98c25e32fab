//! The usage chart: requests per UTC day, answered (`ok`) and refused (any error code), as an SVG
//! the server draws — no script, no library, readable with the table beside it.

use std::collections::BTreeMap;

use chrono::Duration;
use keygate_domain::time::Timestamp;
use keygate_store::UsageRow;

/// Chart area, in SVG user units.
const WIDTH: u32 = 720;
const HEIGHT: u32 = 180;
const LEFT: u32 = 40;
const BOTTOM: u32 = 20;

/// One day's bar: the answered part below the refused part.
pub struct Bar {
    pub x: u32,
    pub width: u32,
    pub ok_y: u32,
    pub ok_height: u32,
    pub refused_y: u32,
    pub refused_height: u32,
    pub day: String,
    pub ok: u64,
    pub refused: u64,
    /// The day's label under the axis (every fifth day), else empty.
    pub label: String,
}

/// What the template draws.
pub struct UsageChart {
    pub width: u32,
    pub height: u32,
    pub left: u32,
    pub baseline: u32,
    pub bars: Vec<Bar>,
    /// The largest day's total (the top of the axis).
    pub max: u64,
    pub total_ok: u64,
    pub total_refused: u64,
    /// Days with any request, newest first, for the table.
    pub rows: Vec<Bar>,
}

/// The last `days` UTC days up to `now`'s, from the usage counters.
#[must_use]
pub fn usage(rows: &[UsageRow], now: Timestamp, days: u32) -> UsageChart {
    let mut per_day: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for row in rows {
        let entry = per_day.entry(row.day.clone()).or_default();
        if row.outcome == "ok" {
            entry.0 += row.count;
        } else {
            entry.1 += row.count;
        }
    }
    let window: Vec<(String, u64, u64)> = (0..days)
        .map(|i| {
            let day = (now - Duration::days(i64::from(days - 1 - i))).format("%Y-%m-%d").to_string();
            let (ok, refused) = per_day.get(&day).copied().unwrap_or_default();
            (day, ok, refused)
        })
        .collect();
    let busiest = window.iter().map(|(_, ok, refused)| ok + refused).max().unwrap_or(0);
    let max = busiest.max(1);
    let plot_height = HEIGHT - BOTTOM - 10;
    let baseline = HEIGHT - BOTTOM;
    let slot = (WIDTH - LEFT) / days.max(1);
    let scale =
        |n: u64| -> u32 { u32::try_from(n.saturating_mul(u64::from(plot_height)) / max).unwrap_or(plot_height) };
    let mut bars = Vec::new();
    for (i, (day, ok, refused)) in (0..days).zip(window) {
        // The bar's whole height is scaled once, so rounding never shortens the busiest day.
        let ok_height = scale(ok);
        let refused_height = scale(ok + refused) - ok_height;
        bars.push(Bar {
            x: LEFT + i * slot + 1,
            width: slot.saturating_sub(2).max(1),
            ok_y: baseline - ok_height,
            ok_height,
            refused_y: baseline - ok_height - refused_height,
            refused_height,
            label: if (days - 1 - i).is_multiple_of(5) { day[5..].to_owned() } else { String::new() },
            day,
            ok,
            refused,
        });
    }
    let rows = bars
        .iter()
        .rev()
        .filter(|b| b.ok + b.refused > 0)
        .map(|b| Bar { label: String::new(), day: b.day.clone(), ..*b })
        .collect();
    UsageChart {
        width: WIDTH,
        height: HEIGHT,
        left: LEFT,
        baseline,
        total_ok: bars.iter().map(|b| b.ok).sum(),
        total_refused: bars.iter().map(|b| b.refused).sum(),
        bars,
        max: busiest,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn row(day: &str, outcome: &str, count: u64) -> UsageRow {
        UsageRow { day: day.to_owned(), outcome: outcome.to_owned(), count }
    }

    #[test]
    fn days_split_into_answered_and_refused_and_scale_to_the_busiest() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).single().unwrap_or_default();
        let rows = [
            row("2026-11-30", "ok", 30),
            row("2026-11-30", "invalid_api_key", 10),
            row("2026-11-29", "rate_limited", 20),
            row("2026-10-01", "ok", 999),
        ];
        let chart = usage(&rows, now, 30);
        assert_eq!(chart.bars.len(), 30);
        let today = chart.bars.last().unwrap_or_else(|| panic!("no bars"));
        assert_eq!((today.day.as_str(), today.ok, today.refused), ("2026-11-30", 30, 10));
        assert_eq!(today.ok_height + today.refused_height, HEIGHT - BOTTOM - 10, "the busiest day fills the plot");
        assert_eq!((chart.total_ok, chart.total_refused, chart.max), (30, 30, 40));
        assert_eq!(chart.rows.iter().map(|b| b.day.as_str()).collect::<Vec<_>>(), ["2026-11-30", "2026-11-29"]);
    }
}
