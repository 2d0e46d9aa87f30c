//! A real consumer of `EncryptedStore`: the `parquet` crate writes a Parquet file through it,
//! then its object_store reader (`ParquetObjectReader`) reads the footer and ONE column chunk
//! back with ranged GETs — it does not know the bytes underneath are encrypted. A small
//! counting decorator on each side of `EncryptedStore` shows how many plaintext bytes Parquet
//! asked for and how many ciphertext bytes that took from the store underneath (whole GCM
//! segments, and the object's header with each read).
//!
//! ```sh
//! cargo run --example parquet_over_encrypted_store --features example-parquet
//! ```
//!
//! The feature brings in `parquet` and `arrow` (only for this example; the library does not
//! use them), which take minutes to compile: `scripts/test` leaves this example out.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use kms_core::{CreateKey, CreateVault, Kms, KmsConfig, Principal};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult,
};
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::async_writer::ParquetObjectWriter;
use parquet::arrow::{AsyncArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::properties::WriterProperties;
use sealstore::object::EncryptedStore;

type Error = Box<dyn std::error::Error>;

const ROWS: usize = 200_000;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let kms = Arc::new(Kms::open(KmsConfig::new(dir.path().join("kms")))?);
    let me = Principal::local_admin();
    let vault = kms.create_vault(
        &me,
        CreateVault {
            display_name: "analytics".into(),
            ..Default::default()
        },
    )?;
    let key = kms.create_key(&me, CreateKey::new(vault.id, "tables"))?;

    // store ← counting (ciphertext) ← EncryptedStore ← counting (plaintext) ← Parquet. The
    // store is in memory and answers every read with bytes, as S3 does: each read is a GET
    // the counter sees. (Over LocalFileSystem, EncryptedStore keeps the file of a GET open
    // and reads further ranges from it directly, past any decorator.)
    let ciphertext = Arc::new(Counting::new(InMemory::new()));
    let encrypted = EncryptedStore::new(ciphertext.clone() as Arc<dyn ObjectStore>, kms, key.id, "lake");
    let plaintext = Arc::new(Counting::new(encrypted));
    let location = Path::from("sales/2026-12.parquet");

    // Write: four row groups of three columns, each column chunk in several pages.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("price", DataType::Float64, false),
        Field::new("customer", DataType::Utf8, false),
    ]));
    let properties = WriterProperties::builder()
        .set_max_row_group_size(ROWS / 4)
        .set_data_page_size_limit(64 * 1024)
        .build();
    let writer = ParquetObjectWriter::new(plaintext.clone(), location.clone());
    let mut writer = AsyncArrowWriter::try_new(writer, schema.clone(), Some(properties))?;
    for start in (0..ROWS).step_by(10_000) {
        let ids: Vec<i64> = (start as i64..start as i64 + 10_000).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| (i % 9_973) as f64 / 100.0),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("customer-{:06}", i % 50_000)),
            )),
        ];
        writer.write(&RecordBatch::try_new(schema.clone(), columns)?).await?;
    }
    writer.close().await?;
    let size = plaintext.head(&location).await?.size;
    let at_rest = ciphertext.inner.head(&location).await?.size;
    println!("wrote {ROWS} rows: {size} bytes of Parquet, {at_rest} bytes of ciphertext at rest");
    plaintext.reset();
    ciphertext.reset();

    // Read the footer: Parquet asks for the last bytes of the file, then the metadata.
    let reader = ParquetObjectReader::new(plaintext.clone(), location.clone()).with_file_size(size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let metadata = builder.metadata().clone();
    println!(
        "footer: {} row groups, {} columns",
        metadata.num_row_groups(),
        metadata.file_metadata().schema_descr().num_columns()
    );
    report("footer", &plaintext, &ciphertext);

    // Read one column chunk: `price` of row group 2, nothing else.
    let chunk = metadata.row_group(2).column(1);
    let (offset, length) = chunk.byte_range();
    println!(
        "column chunk price/row group 2: bytes {offset}..{} of the file, {} values",
        offset + length,
        chunk.num_values()
    );
    let mask = ProjectionMask::roots(metadata.file_metadata().schema_descr(), [1]);
    let batches: Vec<RecordBatch> = builder
        .with_row_groups(vec![2])
        .with_projection(mask)
        .build()?
        .try_collect()
        .await?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, ROWS / 4);
    let first = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or("not f64")?;
    let expected = ((ROWS / 2) as i64 % 9_973) as f64 / 100.0;
    assert_eq!(first.value(0), expected, "the first price of row group 2");
    println!("read {rows} values of one column; the first is {}", first.value(0));
    report("one column chunk", &plaintext, &ciphertext);
    Ok(())
}

/// Prints (and resets) what the two counters saw since the last report.
fn report<A: ObjectStore, B: ObjectStore>(phase: &str, plaintext: &Counting<A>, ciphertext: &Counting<B>) {
    let (plain_gets, plain_bytes) = plaintext.reset();
    let (cipher_gets, cipher_bytes) = ciphertext.reset();
    println!(
        "  {phase}: Parquet requested {plain_bytes} plaintext bytes in {plain_gets} GETs; \
         EncryptedStore read {cipher_bytes} ciphertext bytes in {cipher_gets} GETs ({:.2}x)",
        cipher_bytes as f64 / plain_bytes.max(1) as f64
    );
}

/// An `ObjectStore` decorator counting the GETs that return data and the bytes they return.
#[derive(Debug)]
struct Counting<S> {
    inner: S,
    gets: AtomicU64,
    bytes: AtomicU64,
}

impl<S> Counting<S> {
    fn new(inner: S) -> Self {
        Counting {
            inner,
            gets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// (GETs, bytes) since the last reset.
    fn reset(&self) -> (u64, u64) {
        (
            self.gets.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
        )
    }
}

impl<S: fmt::Display> fmt::Display for Counting<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for Counting<S> {
    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let head = options.head;
        let got = self.inner.get_opts(location, options).await?;
        if !head {
            let Range { start, end } = got.range;
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(end - start, Ordering::Relaxed);
        }
        Ok(got)
    }

    // The rest passes straight through.
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}
