//! Building the report's tables as Polars frames from columns of plain values, in the types the
//! files keep (UTC timestamps in µs, dates, counts as Int64, figures as Float64).

use polars::prelude::*;

/// Columns added in order; [`FrameBuilder::finish`] makes the frame.
#[derive(Default)]
pub struct FrameBuilder {
    columns: Vec<Column>,
}

impl FrameBuilder {
    fn push(mut self, name: &str, series: Series) -> Self {
        self.columns
            .push(series.with_name(name.into()).into_column());
        self
    }

    /// A text column.
    pub fn text<S: AsRef<str>>(self, name: &str, values: Vec<Option<S>>) -> Self {
        let values: Vec<Option<&str>> = values
            .iter()
            .map(|v| v.as_ref().map(AsRef::as_ref))
            .collect();
        self.push(name, Series::new(name.into(), values))
    }

    /// A count.
    pub fn int(self, name: &str, values: Vec<i64>) -> Self {
        self.push(name, Series::new(name.into(), values))
    }

    /// A count that may be unknown.
    pub fn opt_int(self, name: &str, values: Vec<Option<i64>>) -> Self {
        self.push(name, Series::new(name.into(), values))
    }

    /// A figure.
    pub fn float(self, name: &str, values: Vec<Option<f64>>) -> Self {
        self.push(name, Series::new(name.into(), values))
    }

    /// A flag.
    pub fn flag(self, name: &str, values: Vec<bool>) -> Self {
        self.push(name, Series::new(name.into(), values))
    }

    /// A UTC instant from µs since the epoch.
    pub fn utc(self, name: &str, values: Vec<Option<i64>>) -> Self {
        let series = Series::new(name.into(), values)
            .cast(&DataType::Datetime(
                TimeUnit::Microseconds,
                Some(TimeZone::UTC),
            ))
            .expect("µs integers cast to a UTC datetime");
        self.push(name, series)
    }

    /// A date from days since the epoch.
    pub fn date(self, name: &str, values: Vec<i32>) -> Self {
        let series = Series::new(name.into(), values)
            .cast(&DataType::Date)
            .expect("day numbers cast to dates");
        self.push(name, series)
    }

    /// The frame.
    pub fn finish(self) -> PolarsResult<DataFrame> {
        DataFrame::new_infer_height(self.columns)
    }
}
