//! Reading a catalog lazily, one record at a time: JSON Lines or CSV, each record a listing
//! whose images are local paths, http(s) URLs or precomputed hashes.
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// A catalog or results file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// JSON Lines: one JSON object per line.
    Jsonl,
    /// CSV with a header row.
    Csv,
}

impl Format {
    /// The format a file name says (`.jsonl`, `.ndjson`, `.json`, `.csv`), if any.
    pub fn from_path(p: &Path) -> Option<Format> {
        let ext = p.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// `explicit`, else the one `path`'s extension says, else an error naming `flag`.
    pub fn resolve(explicit: Option<Format>, path: &Path, flag: &str) -> anyhow::Result<Format> {
        match explicit.or_else(|| Format::from_path(path)) {
            Some(f) => Ok(f),
            None => bail!(
                "cannot tell the format of {} from its extension (.jsonl or .csv); pass {flag} jsonl|csv",
                path.display()
            ),
        }
    }
}

/// Where one image of a catalog record comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// A local file (relative paths are resolved against the base directory).
    Path(PathBuf),
    /// An http:// or https:// URL, downloaded by the client.
    Url(String),
    /// Hashes computed elsewhere, sent as they are.
    Hashes {
        pdq: String,
        phash: String,
        pdq_quality: Option<u32>,
    },
}

/// A parsed listing of the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub listing_id: String,
    pub marketplace: String,
    pub seller_id: String,
    pub title: String,
    pub description: String,
    pub images: Vec<ImageRef>,
}

/// One record of the catalog as read: its position, the ids it names (for the results row,
/// even when the rest is malformed) and the record, or why it cannot be used.
#[derive(Debug)]
pub struct Entry {
    /// 1-based position of the record in the catalog.
    pub record: u64,
    /// Byte offset just past the record (for progress).
    pub end_offset: u64,
    pub listing_id: String,
    pub marketplace: String,
    pub parsed: Result<Record, String>,
}

/// Opens a catalog for lazy reading (`-` is standard input).
pub fn open(path: &Path, format: Format, base_dir: &Path) -> anyhow::Result<Box<dyn Iterator<Item = Entry> + Send>> {
    let input: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("opening catalog {}", path.display()))?)
    };
    let input = std::io::BufReader::with_capacity(256 * 1024, input);
    Ok(match format {
        Format::Jsonl => Box::new(JsonlReader {
            input,
            base: base_dir.to_path_buf(),
            line: String::new(),
            offset: 0,
            record: 0,
        }),
        Format::Csv => Box::new(CsvReader::new(input, base_dir.to_path_buf())?),
    })
}

/// An image entry of the CSV `images` column or a JSON string: `pdq:HEX`, `phash:HEX`, a URL
/// or a path.
pub fn parse_image_ref(s: &str, base: &Path) -> Result<ImageRef, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("is empty".into());
    }
    if let Some(h) = strip_prefix_ci(s, "pdq:") {
        return Ok(ImageRef::Hashes {
            pdq: h.trim().to_string(),
            phash: String::new(),
            pdq_quality: None,
        });
    }
    if let Some(h) = strip_prefix_ci(s, "phash:") {
        return Ok(ImageRef::Hashes {
            pdq: String::new(),
            phash: h.trim().to_string(),
            pdq_quality: None,
        });
    }
    if strip_prefix_ci(s, "http://").is_some() || strip_prefix_ci(s, "https://").is_some() {
        return Ok(ImageRef::Url(s.to_string()));
    }
    if s.contains("://") {
        return Err(format!("{s}: only http and https URLs are supported"));
    }
    Ok(ImageRef::Path(base.join(s)))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

fn required(field: &str, v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err(format!("{field}: is required"));
    }
    Ok(())
}

// ---- JSON Lines ----

#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    S(String),
    N(serde_json::Number),
}

impl Text {
    fn into_string(self) -> String {
        match self {
            Text::S(s) => s,
            Text::N(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonImage {
    Ref(String),
    Object(JsonImageObject),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonImageObject {
    path: Option<String>,
    url: Option<String>,
    pdq: Option<String>,
    phash: Option<String>,
    pdq_quality: Option<u32>,
}

#[derive(Deserialize)]
struct JsonRecord {
    listing_id: Option<Text>,
    marketplace: Option<String>,
    seller_id: Option<Text>,
    title: Option<String>,
    description: Option<String>,
    #[serde(default)]
    images: Vec<JsonImage>,
}

fn json_image(i: usize, img: JsonImage, base: &Path) -> Result<ImageRef, String> {
    let r = match img {
        JsonImage::Ref(s) => parse_image_ref(&s, base),
        JsonImage::Object(o) => match (o.path, o.url, o.pdq.is_some() || o.phash.is_some()) {
            (Some(p), None, false) => parse_image_ref(&p, base).and_then(|r| match r {
                ImageRef::Path(_) => Ok(r),
                _ => Err(format!("path {p:?} is not a path")),
            }),
            (None, Some(u), false) => parse_image_ref(&u, base).and_then(|r| match r {
                ImageRef::Url(_) => Ok(r),
                _ => Err(format!("url {u:?} is not an http(s) URL")),
            }),
            (None, None, true) => Ok(ImageRef::Hashes {
                pdq: o.pdq.unwrap_or_default(),
                phash: o.phash.unwrap_or_default(),
                pdq_quality: o.pdq_quality,
            }),
            _ => Err("needs exactly one of a path, a url, or pdq/phash hashes".into()),
        },
    };
    r.map_err(|e| format!("images[{i}]: {e}"))
}

struct JsonlReader<R> {
    input: R,
    base: PathBuf,
    line: String,
    offset: u64,
    record: u64,
}

impl<R: BufRead> JsonlReader<R> {
    fn parse(&self, line: &str) -> (String, String, Result<Record, String>) {
        match serde_json::from_str::<JsonRecord>(line) {
            Ok(r) => {
                let listing_id = r.listing_id.map(Text::into_string).unwrap_or_default();
                let marketplace = r.marketplace.unwrap_or_default();
                let parsed = (|| {
                    required("listing_id", &listing_id)?;
                    required("marketplace", &marketplace)?;
                    let images = r
                        .images
                        .into_iter()
                        .enumerate()
                        .map(|(i, img)| json_image(i, img, &self.base))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Record {
                        listing_id: listing_id.clone(),
                        marketplace: marketplace.clone(),
                        seller_id: r.seller_id.map(Text::into_string).unwrap_or_default(),
                        title: r.title.unwrap_or_default(),
                        description: r.description.unwrap_or_default(),
                        images,
                    })
                })();
                (listing_id, marketplace, parsed)
            }
            Err(e) => {
                // Salvage the ids for the error row when the line is JSON at all.
                let v: Option<serde_json::Value> = serde_json::from_str(line).ok();
                let get = |k: &str| {
                    v.as_ref()
                        .and_then(|v| v.get(k))
                        .map(|x| match x {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .unwrap_or_default()
                };
                (
                    get("listing_id"),
                    get("marketplace"),
                    Err(format!("malformed record: {e}")),
                )
            }
        }
    }
}

impl<R: BufRead> Iterator for JsonlReader<R> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            self.line.clear();
            let n = match self.input.read_line(&mut self.line) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) => {
                    // Not UTF-8 (or an I/O error): report it as a record and skip the line.
                    self.record += 1;
                    let mut skipped = Vec::new();
                    let n = self.input.read_until(b'\n', &mut skipped).unwrap_or(0);
                    self.offset += (self.line.len() + n) as u64;
                    if n == 0 && self.line.is_empty() {
                        return None;
                    }
                    return Some(Entry {
                        record: self.record,
                        end_offset: self.offset,
                        listing_id: String::new(),
                        marketplace: String::new(),
                        parsed: Err(format!("unreadable line: {e}")),
                    });
                }
            };
            self.offset += n as u64;
            let line = self.line.trim();
            if line.is_empty() {
                continue;
            }
            self.record += 1;
            let (listing_id, marketplace, parsed) = self.parse(line);
            return Some(Entry {
                record: self.record,
                end_offset: self.offset,
                listing_id,
                marketplace,
                parsed,
            });
        }
    }
}

// ---- CSV ----

struct CsvReader<R> {
    reader: csv::Reader<R>,
    base: PathBuf,
    cols: HashMap<String, usize>,
    row: csv::StringRecord,
    record: u64,
    done: bool,
}

/// The CSV columns read; others are ignored.
pub const CSV_COLUMNS: &[&str] = &[
    "listing_id",
    "marketplace",
    "seller_id",
    "title",
    "description",
    "images",
    "pdq",
    "phash",
];

impl<R: Read> CsvReader<R> {
    fn new(input: R, base: PathBuf) -> anyhow::Result<Self> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
        let headers = reader.headers().context("reading the catalog's CSV header")?.clone();
        let cols: HashMap<String, usize> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase(), i))
            .collect();
        for c in ["listing_id", "marketplace"] {
            if !cols.contains_key(c) {
                bail!(
                    "the catalog's CSV header has no {c} column (columns read: {})",
                    CSV_COLUMNS.join(", ")
                );
            }
        }
        Ok(CsvReader {
            reader,
            base,
            cols,
            row: csv::StringRecord::new(),
            record: 0,
            done: false,
        })
    }

    fn field(&self, name: &str) -> &str {
        self.cols.get(name).and_then(|&i| self.row.get(i)).unwrap_or("")
    }

    fn parse(&self) -> Result<Record, String> {
        let listing_id = self.field("listing_id").trim();
        let marketplace = self.field("marketplace").trim();
        required("listing_id", listing_id)?;
        required("marketplace", marketplace)?;
        let mut images = Vec::new();
        let entries = self.field("images");
        if !entries.trim().is_empty() {
            for (i, e) in entries.split('|').enumerate() {
                images.push(parse_image_ref(e, &self.base).map_err(|m| format!("images[{i}]: {m}"))?);
            }
        }
        // pdq and phash columns: '|'-separated hashes, paired by position into images.
        let split = |s: &str| -> Vec<String> {
            if s.trim().is_empty() {
                Vec::new()
            } else {
                s.split('|').map(|h| h.trim().to_string()).collect()
            }
        };
        let (pdqs, phashes) = (split(self.field("pdq")), split(self.field("phash")));
        for k in 0..pdqs.len().max(phashes.len()) {
            images.push(ImageRef::Hashes {
                pdq: pdqs.get(k).cloned().unwrap_or_default(),
                phash: phashes.get(k).cloned().unwrap_or_default(),
                pdq_quality: None,
            });
        }
        Ok(Record {
            listing_id: listing_id.to_string(),
            marketplace: marketplace.to_string(),
            seller_id: self.field("seller_id").to_string(),
            title: self.field("title").to_string(),
            description: self.field("description").to_string(),
            images,
        })
    }
}

impl<R: Read> Iterator for CsvReader<R> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.done {
            return None;
        }
        let read = self.reader.read_record(&mut self.row);
        let end_offset = self.reader.position().byte();
        match read {
            Ok(false) => {
                self.done = true;
                None
            }
            Ok(true) => {
                self.record += 1;
                let parsed = self.parse();
                Some(Entry {
                    record: self.record,
                    end_offset,
                    listing_id: self.field("listing_id").trim().to_string(),
                    marketplace: self.field("marketplace").trim().to_string(),
                    parsed,
                })
            }
            Err(e) => {
                self.record += 1;
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    self.done = true;
                }
                Some(Entry {
                    record: self.record,
                    end_offset,
                    listing_id: String::new(),
                    marketplace: String::new(),
                    parsed: Err(format!("malformed record: {e}")),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(format: Format, text: &str) -> Vec<Entry> {
        let base = Path::new("/cat");
        match format {
            Format::Jsonl => JsonlReader {
                input: std::io::Cursor::new(text.as_bytes().to_vec()),
                base: base.into(),
                line: String::new(),
                offset: 0,
                record: 0,
            }
            .collect(),
            Format::Csv => CsvReader::new(std::io::Cursor::new(text.as_bytes().to_vec()), base.into())
                .unwrap()
                .collect(),
        }
    }

    #[test]
    fn jsonl_records_and_image_kinds() {
        let e = read(
            Format::Jsonl,
            concat!(
                r#"{"listing_id": 7, "marketplace": "Shopee", "title": "t", "images": ["a.jpg", "/abs/b.png", "https://x/y.jpg", {"pdq": "ab"}, {"phash": "cd", "pdq": "ef", "pdq_quality": 80}, "pdq:01", {"url": "http://h/i"}]}"#,
                "\n\n",
                r#"{"listing_id": "x", "marketplace": "m", "images": [{"path": "a", "url": "http://b"}]}"#,
                "\nnot json\n",
                r#"{"listing_id": "y", "marketplace": "m", "images": "oops"}"#,
                "\n"
            ),
        );
        assert_eq!(e.len(), 4);
        let r = e[0].parsed.as_ref().unwrap();
        assert_eq!((r.listing_id.as_str(), r.marketplace.as_str()), ("7", "Shopee"));
        assert_eq!(
            r.images,
            vec![
                ImageRef::Path("/cat/a.jpg".into()),
                ImageRef::Path("/abs/b.png".into()),
                ImageRef::Url("https://x/y.jpg".into()),
                ImageRef::Hashes {
                    pdq: "ab".into(),
                    phash: "".into(),
                    pdq_quality: None
                },
                ImageRef::Hashes {
                    pdq: "ef".into(),
                    phash: "cd".into(),
                    pdq_quality: Some(80)
                },
                ImageRef::Hashes {
                    pdq: "01".into(),
                    phash: "".into(),
                    pdq_quality: None
                },
                ImageRef::Url("http://h/i".into()),
            ]
        );
        assert_eq!(e[1].record, 2);
        assert!(e[1]
            .parsed
            .as_ref()
            .unwrap_err()
            .starts_with("images[0]: needs exactly one"));
        assert_eq!(e[1].listing_id, "x");
        assert!(e[2].parsed.as_ref().unwrap_err().starts_with("malformed record"));
        assert_eq!((e[3].listing_id.as_str(), e[3].record), ("y", 4));
        assert!(e[3].parsed.is_err());
        assert!(e.windows(2).all(|w| w[0].end_offset < w[1].end_offset));
    }

    #[test]
    fn csv_records_with_images_and_hash_columns() {
        let e = read(
            Format::Csv,
            "listing_id,marketplace,title,images,pdq,phash\n\
             1,shopee,\"baju, bekas\",a.jpg|http://h/x.jpg|pdq:ff|phash:0011,,\n\
             2,lazada,t,,aa|bb,cc\n\
             ,lazada,t,,,\n\
             4,tokopedia,t,ftp://x,,\n",
        );
        assert_eq!(e.len(), 4);
        let r = e[0].parsed.as_ref().unwrap();
        assert_eq!(r.title, "baju, bekas");
        assert_eq!(r.images.len(), 4);
        assert_eq!(r.images[1], ImageRef::Url("http://h/x.jpg".into()));
        let r = e[1].parsed.as_ref().unwrap();
        assert_eq!(
            r.images,
            vec![
                ImageRef::Hashes {
                    pdq: "aa".into(),
                    phash: "cc".into(),
                    pdq_quality: None
                },
                ImageRef::Hashes {
                    pdq: "bb".into(),
                    phash: "".into(),
                    pdq_quality: None
                }
            ]
        );
        assert_eq!(e[2].parsed.as_ref().unwrap_err(), "listing_id: is required");
        assert!(e[3].parsed.as_ref().unwrap_err().contains("only http and https"));
    }

    #[test]
    fn csv_without_id_column_is_refused() {
        assert!(CsvReader::new(std::io::Cursor::new(b"id,marketplace\n".to_vec()), PathBuf::new()).is_err());
    }
}
