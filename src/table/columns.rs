//! Every table's columns, declared once: each [`table!`] list yields the table's Arrow schema
//! and its rows builder (one typed Arrow builder per column, finished in the listed order).

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayBuilder, ArrayRef, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::UTC;

/// A column type: its Arrow type and the builder that fills it.
pub trait Column {
    /// The Arrow builder of such a column.
    type Builder: Default + ArrayBuilder;
    /// The Arrow type of such a column.
    fn data_type() -> DataType;
    /// A builder with room for `rows` values (and, for text, a few bytes each).
    fn with_rows(rows: usize) -> Self::Builder;
    /// Finishes the builder into an array of [`Self::data_type`].
    fn finish(builder: &mut Self::Builder) -> ArrayRef;
}

/// UTF-8 text.
pub struct Text;
/// A UTC instant in microseconds.
pub struct Time;
/// A 64-bit integer.
pub struct I64;
/// A 32-bit integer.
pub struct I32;

impl Column for Text {
    type Builder = StringBuilder;
    fn with_rows(rows: usize) -> StringBuilder {
        StringBuilder::with_capacity(rows, rows * 16)
    }
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn finish(builder: &mut StringBuilder) -> ArrayRef {
        Arc::new(builder.finish())
    }
}

impl Column for Time {
    type Builder = TimestampMicrosecondBuilder;
    fn with_rows(rows: usize) -> TimestampMicrosecondBuilder {
        TimestampMicrosecondBuilder::with_capacity(rows)
    }
    fn data_type() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
    }
    fn finish(builder: &mut TimestampMicrosecondBuilder) -> ArrayRef {
        Arc::new(builder.finish().with_timezone(UTC))
    }
}

/// A plain integer column.
macro_rules! integer_column {
    ($kind:ident, $builder:ident, $data_type:expr) => {
        impl Column for $kind {
            type Builder = $builder;
            fn with_rows(rows: usize) -> $builder {
                $builder::with_capacity(rows)
            }
            fn data_type() -> DataType {
                $data_type
            }
            fn finish(builder: &mut $builder) -> ArrayRef {
                Arc::new(builder.finish())
            }
        }
    };
}

integer_column!(I64, Int64Builder, DataType::Int64);
integer_column!(I32, Int32Builder, DataType::Int32);

/// Declares a table: `Rows / schema_fn "name" { column: Kind, nullable; … }`.
macro_rules! table {
    ($(#[$doc:meta])* $rows:ident / $schema:ident $name:literal {
        $($column:ident: $kind:ident, $nullable:literal;)*
    }) => {
        $(#[$doc])*
        #[doc = concat!("\n\nOne builder per column of `", $name, "`, in the schema's order.")]
        #[derive(Default)]
        pub struct $rows {
            $(
                #[doc = concat!("Column `", stringify!($column), "`.")]
                pub $column: <$kind as Column>::Builder,
            )*
        }

        impl $rows {
            /// Builders with room for `rows` rows.
            pub fn with_rows(rows: usize) -> Self {
                Self { $($column: <$kind as Column>::with_rows(rows),)* }
            }

            /// Rows appended so far (every column has as many when a row is complete).
            pub fn len(&self) -> usize {
                [$(ArrayBuilder::len(&self.$column)),*][0]
            }

            /// Whether no row was appended.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// The rows appended so far as a batch; the builders start over empty.
            ///
            /// # Panics
            /// When columns differ in length: a row was appended to some columns only.
            pub fn finish(&mut self) -> RecordBatch {
                let columns: Vec<ArrayRef> = vec![$(<$kind as Column>::finish(&mut self.$column)),*];
                RecordBatch::try_new($schema(), columns)
                    .expect(concat!("every row of `", $name, "` is appended to each column"))
            }
        }

        #[doc = concat!("Arrow schema of `", $name, "`.")]
        pub fn $schema() -> SchemaRef {
            static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
                Arc::new(Schema::new(vec![
                    $(Field::new(stringify!($column), <$kind as Column>::data_type(), $nullable)),*
                ]))
            });
            SCHEMA.clone()
        }
    };
}

table! {
    /// One row per run.
    RunsRows / runs "runs" {
        workflow_id: Text, false;
        run_id: Text, false;
        status: Text, true;
        start_time: Time, true;
        end_time: Time, true;
        elapsed_time: I64, true;
        duration_ms: I64, true;
        error: Text, true;
        outputs: Text, true;
        node_count: I32, false;
        inputs: Text, true;
        extracted_at: Time, false;
        deleted_upstream_at: Time, true;
    }
}

table! {
    /// One row per entry of a run's `all_outputs`.
    NodeOutputsRows / node_outputs "node_outputs" {
        workflow_id: Text, false;
        run_id: Text, false;
        start_time: Time, true;
        node: Text, false;
        node_index: I32, false;
        value_type: Text, false;
        value: Text, true;
        // Bytes of `value` as stored (NULL with it): statistics need not read the text.
        value_bytes: I64, true;
    }
}

table! {
    /// One row per entry of a run's `inputs`.
    RunInputsRows / run_inputs "run_inputs" {
        workflow_id: Text, false;
        run_id: Text, false;
        start_time: Time, true;
        name: Text, false;
        value_type: Text, false;
        value: Text, true;
    }
}

table! {
    /// One row per executed node of a run (`--with-steps`).
    StepsRows / steps "steps" {
        workflow_id: Text, false;
        run_id: Text, false;
        step_id: Text, true;
        node_id: Text, true;
        status: Text, true;
        start_time: Time, true;
        end_time: Time, true;
        elapsed_time: I64, true;
        duration_ms: I64, true;
        error: Text, true;
        outputs: Text, true;
        inputs: Text, true;
        tokens: I64, true;
    }
}

table! {
    /// One row per workflow (`--all-workflows`), not partitioned.
    WorkflowsRows / workflows "workflows" {
        workflow_id: Text, false;
        name: Text, true;
        description: Text, true;
        status: Text, true;
        version: Text, true;
        created_at: Time, true;
        updated_at: Time, true;
        extracted_at: Time, false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_finish_in_schema_order_and_refuse_half_rows() {
        let mut rows = RunInputsRows::default();
        rows.workflow_id.append_value("wf");
        rows.run_id.append_value("r");
        rows.start_time.append_null();
        rows.name.append_value("prompt");
        rows.value_type.append_value("string");
        rows.value.append_value("hi");
        assert_eq!(rows.len(), 1);
        let batch = rows.finish();
        assert_eq!(batch.schema(), run_inputs());
        assert_eq!(batch.num_rows(), 1);
        assert!(rows.is_empty(), "finishing starts over");
        let names: Vec<String> = runs().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(
            names.last().map(String::as_str),
            Some(super::super::DELETED_UPSTREAM_AT)
        );
        rows.name.append_value("half a row");
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rows.finish())).is_err());
    }
}
