//! A Parquet scan of many segments in chunks: each chunk's `DataSourceExec` is built when the
//! scan reaches it and dropped when its files are read.
//!
//! Why: DataFusion's Parquet opener registers ~24 labelled metrics per file it opens in the
//! metrics set of its `DataSourceExec`, and that set lives as long as the plan (apache/datafusion
//! issue 23644, open; no option turns it off in 55), so a query's memory grew with the files it
//! read. In chunks, the metrics of at most [`CHUNK_FILES`] files per partition are alive.
//! Measured over 100 hosts x 30 days of hourly segments (71,885 files), the top-domains query
//! with a 256 MiB operator pool: peak 1,278 -> 1,227 MB, and ~9.9 -> ~9.1 KB per file in scope
//! (against the same query over 20 of the hosts); the rest of what grows with the files is not
//! these metrics (bench/UNMET.md).
//!
//! What the chunks lose against one `DataSourceExec`: DataFusion's physical filter pushdown
//! and dynamic filters do not reach a leaf it does not know, so the scan gets the query's
//! filters as a predicate of its own (row groups, pages and bloom filters are pruned with it
//! as before, and the filter above the scan still applies every filter: the table answers
//! `Inexact`). Used only for scans of more files than get statistics
//! (`table::STATISTICS_MAX_FILES`), which have none to lose either.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::{StreamExt, TryStreamExt};

/// Files per chunk (each chunk's plan holds the metrics of the files it opened).
pub const CHUNK_FILES: usize = 512;

/// `DNSQL_SCAN_CHUNKS=OVER,FILES`: scans of more than OVER files are read in chunks of FILES
/// (the tests read a small tree both ways and compare; a value that does not parse is
/// ignored).
pub fn from_env() -> Option<(usize, usize)> {
    let v = std::env::var("DNSQL_SCAN_CHUNKS").ok()?;
    let (over, files) = v.split_once(',')?;
    Some((over.trim().parse().ok()?, files.trim().parse().ok()?))
}

/// Builds the plan of one chunk: a scan of `files` with one output partition.
pub type BuildChunk =
    Arc<dyn Fn(Vec<PartitionedFile>) -> Result<Arc<dyn ExecutionPlan>> + Send + Sync>;

/// The scan: per output partition, its chunks of files, read one after the other.
pub struct ChunkedScan {
    partitions: Vec<Vec<Vec<PartitionedFile>>>,
    build: BuildChunk,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    files: usize,
}

impl ChunkedScan {
    /// A scan of `groups` (one per output partition, in order) in chunks of `chunk_files`,
    /// with output `schema` (what `build` makes).
    pub fn new(
        groups: Vec<Vec<PartitionedFile>>,
        chunk_files: usize,
        schema: SchemaRef,
        build: BuildChunk,
    ) -> Self {
        let files = groups.iter().map(Vec::len).sum();
        let partitions: Vec<Vec<Vec<PartitionedFile>>> = groups
            .into_iter()
            .map(|g| g.chunks(chunk_files.max(1)).map(<[_]>::to_vec).collect())
            .collect();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ChunkedScan {
            partitions,
            build,
            schema,
            properties: Arc::new(properties),
            files,
        }
    }
}

impl fmt::Debug for ChunkedScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkedScan")
            .field("files", &self.files)
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

impl DisplayAs for ChunkedScan {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let chunks: usize = self.partitions.iter().map(Vec::len).sum();
        write!(
            f,
            "ChunkedSegmentScan: files={}, chunks={chunks}, partitions={}",
            self.files,
            self.partitions.len()
        )
    }
}

impl ExecutionPlan for ChunkedScan {
    fn name(&self) -> &'static str {
        "ChunkedSegmentScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let chunks = self.partitions.get(partition).cloned().unwrap_or_default();
        let build = self.build.clone();
        // Each chunk's plan is built as the stream reaches it; its stream (holding what the
        // plan's readers registered) is dropped when its files are read.
        let batches = futures::stream::iter(chunks)
            .map(move |files| build(files).and_then(|plan| plan.execute(0, context.clone())))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            batches,
        )))
    }
}
