//! The hash list formats shared with other platforms: `relist export` writes the bank's PDQ
//! hashes in them, and `relist import` registers a shared list as hash-only takedowns (both
//! commands are in the binary; the daemon streams the hashes with [`crate::bank::Bank::export_pdq`]).
//!
//! Formats:
//! - `hex`: one lowercase 64-hex PDQ hash a line (import also takes upper case, blank lines
//!   and `#` comments);
//! - `te-csv`: ThreatExchange CSV, header `signal_type,signal_str,collab,category,tags`, with
//!   signal_type `pdq`. Export writes the takedown's marketplace as collab, its reason as
//!   category and `relist_takedown_<id>` as tag; import reads `pdq` rows and skips others.
//!
//! An imported hash becomes the takedown of listing `pdq-<hash>` on the given marketplace, so
//! importing the same list again updates those takedowns instead of adding new ones.
use std::collections::HashSet;
use std::io::{BufRead, Write};

use serde::Serialize;

use crate::domain::TakedownId;
use crate::fingerprint::pdq::PdqHash;

/// The ThreatExchange CSV header.
pub const TE_CSV_HEADER: [&str; 5] = ["signal_type", "signal_str", "collab", "category", "tags"];

/// Listing ids of imported hashes start with this.
pub const IMPORTED_LISTING_PREFIX: &str = "pdq-";

/// One image hash of a live takedown, as exported.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportedPdq {
    /// The image's PDQ hash, as stored.
    pub pdq: PdqHash,
    /// The takedown it belongs to (te-csv's tag).
    pub takedown_id: TakedownId,
    /// The takedown's marketplace (te-csv's collab).
    pub marketplace: String,
    /// Why it was taken down (te-csv's category).
    pub reason: String,
}

/// Why a hash list could not be read or written. A bad line is not one: it is reported in
/// [`Parsed::errors`] with its number.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The list could not be read.
    #[error("reading the hash list")]
    Read(#[source] std::io::Error),
    /// A te-csv list has no readable header.
    #[error("reading the CSV header")]
    Header(#[source] csv::Error),
    /// A te-csv list lacks the columns a hash is read from (the expected header).
    #[error("not a ThreatExchange CSV: the header needs signal_type and signal_str (expected {0})")]
    NotTeCsv(String),
    /// A hash could not be written.
    #[error("writing hashes")]
    Write(#[from] csv::Error),
    /// The output could not be flushed.
    #[error("writing hashes")]
    Flush(#[source] std::io::Error),
}

/// A hash list format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One lowercase 64-hex PDQ hash a line.
    Hex,
    /// ThreatExchange CSV (signal_type,signal_str,collab,category,tags).
    TeCsv,
}

/// A line of a hash list that cannot be imported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LineError {
    /// 1-based line number in the file.
    pub line: u64,
    /// What is wrong with it.
    pub message: String,
}

/// What a hash list holds: valid hashes with their line numbers, and the rest.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// Each distinct valid hash with its 1-based line number, in file order.
    pub hashes: Vec<(u64, PdqHash)>,
    /// The same hash again further down the file.
    pub duplicates: u64,
    /// Rows of other signal types (te-csv).
    pub other_signals: u64,
    /// Lines that are not hashes, with their numbers.
    pub errors: Vec<LineError>,
}

impl Parsed {
    fn push(&mut self, seen: &mut HashSet<PdqHash>, line: u64, text: &str) {
        match PdqHash::from_hex(text.trim()) {
            Some(h) if !seen.insert(h) => self.duplicates += 1,
            Some(h) => self.hashes.push((line, h)),
            None => self.errors.push(LineError {
                line,
                message: format!("not a PDQ hash (64 hex characters): {:?}", clip(text.trim())),
            }),
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Parses a hash list. Only an unreadable file (or a te-csv file without its columns) is an
/// error; bad lines are reported in [`Parsed::errors`] with their numbers.
pub fn parse(format: Format, input: impl std::io::Read) -> Result<Parsed, ExchangeError> {
    let mut out = Parsed::default();
    let mut seen = HashSet::new();
    match format {
        Format::Hex => {
            let reader = std::io::BufReader::new(input);
            for (i, line) in reader.split(b'\n').enumerate() {
                let line_no = i as u64 + 1;
                let bytes = line.map_err(ExchangeError::Read)?;
                let Ok(text) = std::str::from_utf8(&bytes) else {
                    out.errors.push(LineError {
                        line: line_no,
                        message: "not UTF-8".into(),
                    });
                    continue;
                };
                let text = text.trim();
                if text.is_empty() || text.starts_with('#') {
                    continue;
                }
                out.push(&mut seen, line_no, text);
            }
        }
        Format::TeCsv => {
            let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(input);
            let headers = r.headers().map_err(ExchangeError::Header)?.clone();
            let col = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
            let (Some(kind), Some(value)) = (col("signal_type"), col("signal_str")) else {
                return Err(ExchangeError::NotTeCsv(TE_CSV_HEADER.join(",")));
            };
            for row in r.byte_records() {
                let row = match row {
                    Ok(row) => row,
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        out.errors.push(LineError {
                            line,
                            message: format!("unreadable CSV row: {e}"),
                        });
                        continue;
                    }
                };
                let line = row.position().map_or(0, |p| p.line());
                let field = |i: usize| std::str::from_utf8(row.get(i).unwrap_or_default()).ok();
                match field(kind).map(str::trim) {
                    Some(k) if k.eq_ignore_ascii_case("pdq") => {}
                    Some(_) => {
                        out.other_signals += 1;
                        continue;
                    }
                    None => {
                        out.errors.push(LineError {
                            line,
                            message: "signal_type is not UTF-8".into(),
                        });
                        continue;
                    }
                }
                match field(value) {
                    Some(v) => out.push(&mut seen, line, v),
                    None => out.errors.push(LineError {
                        line,
                        message: "signal_str is missing or not UTF-8".into(),
                    }),
                }
            }
        }
    }
    Ok(out)
}

/// Writes exported hashes in `format`; each distinct hash once. Returns how many were written.
pub struct Writer<W: Write> {
    format: Format,
    out: csv::Writer<W>,
    seen: HashSet<PdqHash>,
    written: u64,
}

impl<W: Write> Writer<W> {
    /// A writer of `format` to `out` (te-csv starts with its header).
    pub fn new(format: Format, out: W) -> Result<Self, ExchangeError> {
        let mut out = csv::WriterBuilder::new().flexible(true).from_writer(out);
        if format == Format::TeCsv {
            out.write_record(TE_CSV_HEADER)?;
        }
        Ok(Writer {
            format,
            out,
            seen: HashSet::new(),
            written: 0,
        })
    }

    /// Writes `h` unless the same hash was written before.
    pub fn write(&mut self, h: &ExportedPdq) -> Result<(), ExchangeError> {
        if !self.seen.insert(h.pdq) {
            return Ok(());
        }
        let hex = h.pdq.to_hex();
        match self.format {
            Format::Hex => self.out.write_record([hex.as_str()])?,
            Format::TeCsv => {
                let tag = format!("relist_takedown_{}", h.takedown_id);
                self.out
                    .write_record(["pdq", hex.as_str(), h.marketplace.as_str(), h.reason.as_str(), &tag])?
            }
        }
        self.written += 1;
        Ok(())
    }

    /// Flushes and hands back the output.
    pub fn finish(self) -> Result<(W, u64), ExchangeError> {
        let written = self.written;
        let out = self
            .out
            .into_inner()
            .map_err(|e| ExchangeError::Flush(e.into_error()))?;
        Ok((out, written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> PdqHash {
        PdqHash([b; 32])
    }

    #[test]
    fn hex_lists_report_bad_lines_by_number() {
        let text = format!(
            "# shared list\n{}\n\n{}\nnot-a-hash\n{}\n{}\n",
            h(1).to_hex(),
            h(2).to_hex().to_uppercase(),
            h(1).to_hex(),
            &h(3).to_hex()[..63]
        );
        let p = parse(Format::Hex, text.as_bytes()).unwrap();
        assert_eq!(p.hashes, vec![(2, h(1)), (4, h(2))]);
        assert_eq!(p.duplicates, 1);
        assert_eq!(p.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![5, 7]);
    }

    #[test]
    fn te_csv_round_trips_and_skips_other_signals() {
        let mut w = Writer::new(Format::TeCsv, Vec::new()).unwrap();
        for (i, b) in [1u8, 2, 1].into_iter().enumerate() {
            w.write(&ExportedPdq {
                pdq: h(b),
                takedown_id: i as u64 + 1,
                marketplace: "m".into(),
                reason: "counterfeit, fake".into(),
            })
            .unwrap();
        }
        let (mut bytes, n) = w.finish().unwrap();
        assert_eq!(n, 2);
        bytes.extend_from_slice(b"md5,abc,m,x,\npdq,zz,m,x,\n");
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("signal_type,signal_str,collab,category,tags\npdq,"));
        let p = parse(Format::TeCsv, bytes.as_slice()).unwrap();
        assert_eq!(p.hashes, vec![(2, h(1)), (3, h(2))]);
        assert_eq!(p.other_signals, 1);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].line, 5);
        assert!(parse(Format::TeCsv, "a,b\n1,2\n".as_bytes()).is_err());
    }

    #[test]
    fn hex_export_is_one_lowercase_hash_a_line() {
        let mut w = Writer::new(Format::Hex, Vec::new()).unwrap();
        w.write(&ExportedPdq {
            pdq: h(0xab),
            takedown_id: 1,
            marketplace: "m".into(),
            reason: String::new(),
        })
        .unwrap();
        let (bytes, _) = w.finish().unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), format!("{}\n", "ab".repeat(32)));
    }
}
