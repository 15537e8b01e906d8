//! Latency figures the soaks and fault tests print: percentiles, and the drift of a long run
//! (the median of its last tenth against its first).

use std::time::Duration;

/// The `p`th percentile (nearest rank below) of `v`, sorted in place; zero when empty.
pub fn percentile(v: &mut [Duration], p: usize) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) * p) / 100]
}

/// The (p50, p90) of each tenth of `times`, taken in the order they were recorded.
pub fn tenths(times: &[Duration]) -> Vec<(Duration, Duration)> {
    let tenth = (times.len() / 10).max(1);
    times
        .chunks(tenth)
        .take(10)
        .map(|c| {
            let mut c = c.to_vec();
            (percentile(&mut c, 50), percentile(&mut c, 90))
        })
        .collect()
}

/// The last tenth's median over the first tenth's (1.0 = no drift; 0 without figures).
pub fn drift(tenths: &[(Duration, Duration)]) -> f64 {
    match (tenths.first(), tenths.last()) {
        (Some(first), Some(last)) if !first.0.is_zero() => {
            last.0.as_secs_f64() / first.0.as_secs_f64()
        }
        _ => 0.0,
    }
}

/// The drift along the run's trend: a robust line (Theil-Sen: the median of the pairwise
/// slopes) fitted to `times` in recording order, read at the middle of the last tenth over
/// the middle of the first. Where each tenth holds few samples (a docker run is ~2 s), their
/// medians jump by 10-20% between neighbours; the fitted line does not, and it still moves
/// when latency grows over the run.
pub fn trend_drift(times: &[Duration]) -> f64 {
    let y: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    let n = y.len();
    if n < 2 {
        return 0.0;
    }
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            slopes.push((y[j] - y[i]) / (j - i) as f64);
        }
    }
    let slope = median(&mut slopes);
    let mut icepts: Vec<f64> = y
        .iter()
        .enumerate()
        .map(|(i, v)| v - slope * i as f64)
        .collect();
    let icept = median(&mut icepts);
    let at = |x: f64| icept + slope * x;
    let (first, last) = (at(n as f64 * 0.05), at(n as f64 * 0.95));
    if first <= 0.0 {
        return 0.0;
    }
    last / first
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenths_follow_recording_order_and_drift_compares_ends() {
        let ms = Duration::from_millis;
        let times: Vec<Duration> = (0..100).map(|i| ms(10 + i / 10)).collect();
        let t = tenths(&times);
        assert_eq!(t.len(), 10);
        assert_eq!(t[0].0, ms(10));
        assert_eq!(t[9].0, ms(19));
        assert!((drift(&t) - 1.9).abs() < 1e-9);
        assert_eq!(drift(&[]), 0.0);
        assert_eq!(percentile(&mut [], 50), Duration::ZERO);
    }

    #[test]
    fn trend_drift_ignores_noise_and_outliers_but_sees_growth() {
        let ms = Duration::from_millis;
        // Flat with alternating +-20% noise and a few huge outliers: no drift.
        let flat: Vec<Duration> = (0..200)
            .map(|i| match i {
                i if i % 50 == 49 => ms(5000),
                i if i % 2 == 0 => ms(120),
                _ => ms(80),
            })
            .collect();
        let d = trend_drift(&flat);
        assert!((0.9..1.1).contains(&d), "flat run drifted {d}");
        // Growing linearly from 100 to 199 ms: fitted at 5% and 95%.
        let growing: Vec<Duration> = (0..100).map(|i| ms(100 + i)).collect();
        let d = trend_drift(&growing);
        assert!((d - 195.0 / 105.0).abs() < 0.01, "growth read as {d}");
        assert_eq!(trend_drift(&[ms(1)]), 0.0);
    }
}
