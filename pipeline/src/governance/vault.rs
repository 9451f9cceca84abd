//! The identity vault: pseudo_id -> NHS number, name, date of birth, address,
//! postcode, phone and practice. Parquet with modular encryption (AES-GCM): the
//! footer and every column are encrypted with the vault key, so without the key the
//! file shows neither its values nor its statistics. Only the gate opens it.

use crate::bad_input;
use crate::error::Result;
use crate::governance::pseudonym::Key;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::encryption::decrypt::FileDecryptionProperties;
use datafusion::parquet::encryption::encrypt::FileEncryptionProperties;
use datafusion::parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

/// Identity columns of the identifiable `patients` extract, as (name, type, doc). They
/// go into the identity vault and nowhere else; the contract's identifiable schema
/// (`ingest::contract`) takes them from here.
pub const IDENTITY_COLUMNS: &[(&str, DataType, &str)] = &[
    ("given_name", DataType::Utf8, ""),
    ("family_name", DataType::Utf8, ""),
    ("date_of_birth", DataType::Date32, ""),
    ("address", DataType::Utf8, "one line"),
    ("postcode", DataType::Utf8, ""),
    ("phone", DataType::Utf8, ""),
];

/// pseudo_id, nhs_number (ten digits), the identity columns, practice_code.
pub fn schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("pseudo_id", DataType::Utf8, false),
        Field::new("nhs_number", DataType::Utf8, true),
    ];
    fields.extend(
        IDENTITY_COLUMNS
            .iter()
            .map(|(name, ty, _)| Field::new(*name, ty.clone(), true)),
    );
    fields.push(Field::new("practice_code", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// The last four bytes of Parquet whose footer is encrypted, as the vault's is.
pub const ENCRYPTED_PARQUET_MAGIC: &[u8; 4] = b"PARE";

/// Whether `path` is a file that could be a vault (Parquet with an encrypted footer),
/// without the key: what `pseudonymise` may replace under `--vault`.
pub fn looks_like_vault(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut tail = [0u8; 4];
    f.metadata().is_ok_and(|m| m.is_file() && m.len() >= 8)
        && f.seek(SeekFrom::End(-4)).is_ok()
        && f.read_exact(&mut tail).is_ok()
        && &tail == ENCRYPTED_PARQUET_MAGIC
}

/// Writes a vault, readable by its owner only, in batches.
pub struct Writer {
    inner: ArrowWriter<std::fs::File>,
    rows: u64,
}

impl Writer {
    pub fn create(path: &Path, key: &Key) -> Result<Self> {
        let encryption = FileEncryptionProperties::builder(key.bytes().to_vec()).build()?;
        let props = WriterProperties::builder()
            .with_file_encryption_properties(encryption)
            .build();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts
            .open(path)
            .map_err(|e| bad_input!("vault {}: cannot write it ({e})", path.display()))?;
        Ok(Self {
            inner: ArrowWriter::try_new(file, schema(), Some(props))?,
            rows: 0,
        })
    }

    /// Columns in [`schema`]'s order.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = RecordBatch::try_new(schema(), batch.columns().to_vec())?;
        self.rows += batch.num_rows() as u64;
        self.inner.write(&batch)?;
        Ok(())
    }

    /// Close the file and sync it; returns the rows written.
    pub fn finish(self) -> Result<u64> {
        let file = self.inner.into_inner()?;
        file.sync_all()?;
        Ok(self.rows)
    }
}

/// Write a vault whole: a temporary file renamed into place.
pub fn write(path: &Path, key: &Key, batches: &[RecordBatch]) -> Result<()> {
    let tmp = path.with_extension("parquet.tmp");
    let mut w = Writer::create(&tmp, key)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    std::fs::rename(&tmp, path).map_err(crate::durable::io_at(path, "renaming into place"))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::durable::sync_dir(parent)?;
    }
    Ok(())
}

/// Open the vault with its key; a wrong key is an error that says so.
pub fn read(path: &Path, key: &Key) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path)
        .map_err(|e| bad_input!("vault {}: cannot open it ({e})", path.display()))?;
    let decryption = FileDecryptionProperties::builder(key.bytes().to_vec()).build()?;
    let options = ArrowReaderOptions::new().with_file_decryption_properties(decryption);
    let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .and_then(|b| b.build())
        .map_err(|_| {
            bad_input!(
                "vault {}: this vault key does not open it (wrong --vault-key, or not a vault)",
                path.display()
            )
        })?;
    reader
        .map(|b| {
            b.map_err(|_| bad_input!("vault {}: this vault key does not open it", path.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Date32Array, StringArray};

    fn batch() -> RecordBatch {
        let s = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        RecordBatch::try_new(
            schema(),
            vec![
                s("0123456789abcdef0123456789abcdef"),
                s("9434765919"),
                s("Ada"),
                s("Lovelace"),
                Arc::new(Date32Array::from(vec![-56_000])),
                s("12 St James's Square"),
                s("SW1Y 4JH"),
                s("07700900123"),
                s("A81001"),
            ],
        )
        .unwrap()
    }

    #[test]
    fn opens_only_with_its_key_and_hides_plaintext() {
        let dir = std::env::temp_dir().join(format!("rs-vault-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vault.parquet");
        let key = Key::from_bytes([3; 32]);
        write(&path, &key, &[batch()]).unwrap();

        let back = read(&path, &key).unwrap();
        assert_eq!(back, vec![batch()]);
        assert!(looks_like_vault(&path));
        assert!(!looks_like_vault(&dir), "a folder is not a vault");
        let plain = dir.join("plain.txt");
        std::fs::write(&plain, "not a vault").unwrap();
        assert!(!looks_like_vault(&plain));

        let e = read(&path, &Key::from_bytes([4; 32])).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("does not open it"), "{}", e.message);

        // Without a key, a plain Parquet reader cannot read it.
        let plain = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap());
        assert!(plain.is_err());

        // No identifier appears in the file's bytes.
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for needle in [
            "9434765919",
            "Lovelace",
            "SW1Y 4JH",
            "07700900123",
            "0123456789abcdef",
        ] {
            assert!(!text.contains(needle), "{needle} in plaintext");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
