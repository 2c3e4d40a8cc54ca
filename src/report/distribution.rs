//! Exact order statistics of a group's values (durations in ms, sizes in bytes, tokens), kept as
//! plain integers: 8 bytes a value, so the durations of 5M runs take 40 MB, where a group-by over
//! the text keys held 4 GB. Quantiles interpolate linearly between the two nearest ranks
//! (numpy's default, DuckDB's `quantile_cont`, Polars' `QuantileMethod::Linear`).

/// The values of one group, in no particular order until [`Samples::sort`].
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<i64>,
    sorted: bool,
}

impl Samples {
    /// Adds one value.
    pub fn push(&mut self, value: i64) {
        self.values.push(value);
        self.sorted = false;
    }

    /// Adds every value of `other`.
    pub fn extend(&mut self, other: &Samples) {
        self.values.extend_from_slice(&other.values);
        self.sorted = false;
    }

    /// Takes every value of `other` (merging accumulators).
    pub fn absorb(&mut self, mut other: Samples) {
        if self.values.is_empty() {
            *self = other;
        } else {
            self.values.append(&mut other.values);
            self.sorted = false;
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Sorts the values (once) so that quantiles can be read.
    pub fn sort(&mut self) {
        if !self.sorted {
            self.values.sort_unstable();
            self.sorted = true;
        }
    }

    /// The `q` quantile (0 ≤ q ≤ 1), linearly interpolated; `None` without values.
    ///
    /// # Panics
    /// When the values were changed since the last [`Samples::sort`].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        assert!(
            self.sorted || self.values.len() < 2,
            "sort before reading quantiles"
        );
        let n = self.values.len();
        if n == 0 {
            return None;
        }
        let position = q.clamp(0.0, 1.0) * (n - 1) as f64;
        let below = position.floor() as usize;
        let above = position.ceil() as usize;
        let (a, b) = (self.values[below] as f64, self.values[above] as f64);
        Some(a + (b - a) * (position - below as f64))
    }

    /// The largest value.
    pub fn max(&self) -> Option<i64> {
        if self.sorted {
            self.values.last().copied()
        } else {
            self.values.iter().copied().max()
        }
    }

    /// The sum of the values.
    pub fn sum(&self) -> i64 {
        self.values.iter().sum()
    }

    /// The mean; `None` without values.
    pub fn mean(&self) -> Option<f64> {
        (!self.values.is_empty())
            .then(|| self.values.iter().map(|v| *v as f64).sum::<f64>() / self.values.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[i64]) -> Samples {
        let mut s = Samples::default();
        for v in values {
            s.push(*v);
        }
        s.sort();
        s
    }

    #[test]
    fn quantiles_interpolate_between_the_nearest_ranks() {
        // (values, q, expected) — numpy.quantile(values, q) gives the same.
        let cases: &[(&[i64], f64, Option<f64>)] = &[
            (&[], 0.5, None),
            (&[7], 0.95, Some(7.0)),
            (&[4, 1, 3, 2], 0.5, Some(2.5)),
            (&[4, 1, 3, 2], 0.95, Some(3.85)),
            (&[4, 1, 3, 2], 0.99, Some(3.97)),
            (&[4, 1, 3, 2], 0.0, Some(1.0)),
            (&[4, 1, 3, 2], 1.0, Some(4.0)),
            (&[10, 20], 0.9, Some(19.0)),
            (&[5, 5, 5, 100], 0.5, Some(5.0)),
        ];
        for (values, q, want) in cases {
            let got = samples(values).quantile(*q);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{values:?} q={q}: {g}"),
                _ => assert_eq!(got, *want, "{values:?} q={q}"),
            }
        }
    }

    #[test]
    fn merged_samples_give_the_quantiles_of_all_values() {
        let mut a = samples(&[9, 1, 5]);
        let b = samples(&[3, 7]);
        a.absorb(b);
        a.sort();
        assert_eq!(a.quantile(0.5), Some(5.0));
        assert_eq!((a.max(), a.sum()), (Some(9), 25));
        assert_eq!(a.mean(), Some(5.0));
        let mut c = Samples::default();
        c.extend(&a);
        c.sort();
        assert_eq!(c.quantile(0.25), Some(3.0));
    }
}
