//! The cached bytes of `/metrics`: node_exporter's collector model on
//! pre-rendered, pre-compressed segments.
//!
//! Each producer (the enrollment poll, the organisation walk) renders its
//! series into a [`Rendered`], compresses it into a [`Segment`] off every
//! lock, and swaps it in; a scrape splices the segments behind the live part
//! (the exporter's own metrics, encoded per scrape).
//!
//! A segment is a list of parts. Most parts are the same in both formats
//! and kept once; a family's metadata lines, where the text format 0.0.4
//! and OpenMetrics differ ([`crate::openmetrics`]), is a part with a second
//! form. Every part is compressed on its own into a deflate piece that
//! splices before any other ([`crate::deflate::piece`]), so the gzip body of
//! either format is one stream chosen from the same pieces, ended per scrape
//! by the trailer.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;

use crate::deflate::{FINAL_EMPTY_BLOCK, piece, sync_flushed};
use crate::openmetrics::{EOF, Format, Kind, openmetrics_header, text_header};

/// Series as a producer renders them: runs of lines, with each family's
/// metadata in both formats. Dereferences to the run being written.
#[derive(Default)]
pub struct Rendered {
    parts: Vec<(String, Option<String>)>,
    open: String,
}

impl Rendered {
    pub fn with_capacity(bytes: usize) -> Rendered {
        Rendered {
            parts: Vec::new(),
            open: String::with_capacity(bytes),
        }
    }

    /// A family's metadata: shared with the run when both formats agree,
    /// otherwise a part of its own with both forms.
    pub fn header(&mut self, name: &str, help: &str, kind: Kind) {
        let mut text = String::new();
        text_header(&mut text, name, help, kind);
        let mut open = String::new();
        openmetrics_header(&mut open, name, help, kind);
        if text == open {
            self.open.push_str(&text);
        } else {
            self.close_run();
            self.parts.push((text, Some(open)));
        }
    }

    fn close_run(&mut self) {
        if !self.open.is_empty() {
            let run = std::mem::take(&mut self.open);
            self.parts.push((run, None));
        }
    }

    /// The whole rendering in one format.
    pub fn to_string(&self, format: Format) -> String {
        let mut out = String::new();
        for (text, open) in &self.parts {
            out.push_str(match (format, open) {
                (Format::OpenMetrics, Some(open)) => open,
                _ => text,
            });
        }
        out.push_str(&self.open);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.open.is_empty()
    }
}

impl Deref for Rendered {
    type Target = String;
    fn deref(&self) -> &String {
        &self.open
    }
}

impl DerefMut for Rendered {
    fn deref_mut(&mut self) -> &mut String {
        &mut self.open
    }
}

impl From<String> for Rendered {
    fn from(text: String) -> Rendered {
        Rendered {
            parts: Vec::new(),
            open: text,
        }
    }
}

/// Text and its deflate piece.
#[derive(Clone)]
struct Piece {
    text: Bytes,
    deflated: Bytes,
    crc: crc32fast::Hasher,
}

impl Piece {
    fn new(text: String) -> Piece {
        let mut crc = crc32fast::Hasher::new();
        crc.update(text.as_bytes());
        Piece {
            deflated: Bytes::from(piece(text.as_bytes())),
            text: Bytes::from(text),
            crc,
        }
    }
}

/// One part of a segment: its text-format piece, and the OpenMetrics one
/// where they differ.
struct Part {
    text: Piece,
    openmetrics: Option<Piece>,
}

impl Part {
    fn of(&self, format: Format) -> &Piece {
        match (format, &self.openmetrics) {
            (Format::OpenMetrics, Some(p)) => p,
            _ => &self.text,
        }
    }
}

/// One producer's rendered series, plain and compressed, in both formats.
pub struct Segment {
    parts: Vec<Part>,
}

impl Segment {
    /// Compresses a rendering (about 1 s per 4.5 MB at libdeflate's
    /// strongest level: call it outside every lock).
    pub fn new(rendered: Rendered) -> Segment {
        let Rendered { mut parts, open } = rendered;
        if !open.is_empty() {
            parts.push((open, None));
        }
        Segment {
            parts: parts
                .into_iter()
                .map(|(text, open)| Part {
                    text: Piece::new(text),
                    openmetrics: open.map(Piece::new),
                })
                .collect(),
        }
    }

    pub fn empty() -> Segment {
        Segment { parts: Vec::new() }
    }

    /// The segment's text in one format.
    pub fn text(&self, format: Format) -> Vec<Bytes> {
        self.parts
            .iter()
            .map(|p| p.of(format).text.clone())
            .collect()
    }

    /// Bytes of the compressed pieces in one format.
    pub fn deflated_len(&self, format: Format) -> usize {
        self.parts.iter().map(|p| p.of(format).deflated.len()).sum()
    }
}

/// `# EOF`, which ends an OpenMetrics body: a segment whose text form is
/// empty.
fn eof() -> Arc<Segment> {
    static EOF_SEGMENT: OnceLock<Arc<Segment>> = OnceLock::new();
    EOF_SEGMENT
        .get_or_init(|| {
            Arc::new(Segment {
                parts: vec![Part {
                    text: Piece::new(String::new()),
                    openmetrics: Some(Piece::new(EOF.to_owned())),
                }],
            })
        })
        .clone()
}

const FORMATS: [Format; 2] = [Format::Text, Format::OpenMetrics];

fn index(format: Format) -> usize {
    match format {
        Format::Text => 0,
        Format::OpenMetrics => 1,
    }
}

/// What a scrape serves besides the live part: the producers' segments in
/// order, then `# EOF` in OpenMetrics, with each format's combined CRC and
/// length.
///
/// The gzip form is one gzip member whose deflate stream is spliced: each
/// scrape compresses its small live part first (a sync-flushed piece), then
/// come the segments' pieces, then the trailer: an empty final block, the
/// CRC and the length. Any gzip reader sees one ordinary stream; the plain
/// form has the same order. Making one is cheap (no rendering, no
/// compressing): a producer's publish swaps its segment and splices anew.
pub struct Exposition {
    segments: Vec<Arc<Segment>>,
    /// Per format: CRC and length of the segments' text.
    sums: [(crc32fast::Hasher, u64); 2],
    /// Per format: the live part as last encoded, reused for [`LIVE_MAX_AGE`].
    live: [RwLock<Option<Arc<LiveParts>>>; 2],
}

/// How long one encoding of the exporter's own metrics serves scrapes. Under
/// load that makes a scrape a handful of shared buffers, as a static file
/// server would send; `process_*` values and API request counts of a poll
/// in progress are at most this old. Each poll publishes a new
/// [`Exposition`] and a reload calls [`Exposition::forget_live`], so their
/// outcomes are never held back.
pub const LIVE_MAX_AGE: Duration = Duration::from_millis(100);

/// One encoding of the live part, plain and as the gzip head and trailer
/// around the cached pieces.
struct LiveParts {
    made: Instant,
    plain: Bytes,
    gzip_head: Bytes,
    gzip_tail: Bytes,
}

const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

impl Exposition {
    /// One segment of plain text (tests and benchmarks).
    pub fn new(text: String) -> Exposition {
        Exposition::spliced(vec![Arc::new(Segment::new(text.into()))])
    }

    /// The segments, in order.
    pub fn spliced(mut segments: Vec<Arc<Segment>>) -> Exposition {
        segments.push(eof());
        let sums = FORMATS.map(|format| {
            let mut crc = crc32fast::Hasher::new();
            let mut len = 0u64;
            for piece in segments.iter().flat_map(|s| &s.parts).map(|p| p.of(format)) {
                crc.combine(&piece.crc);
                len += piece.text.len() as u64;
            }
            (crc, len)
        });
        Exposition {
            segments,
            sums,
            live: Default::default(),
        }
    }

    pub fn empty() -> Exposition {
        Exposition::spliced(Vec::new())
    }

    /// Drops the cached live parts, so the next scrape encodes them afresh
    /// (after a change the exporter itself makes, such as a reload).
    pub fn forget_live(&self) {
        for live in &self.live {
            *live.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// The body of a scrape: the live part (from `encode_live`, or as encoded
    /// less than [`LIVE_MAX_AGE`] ago) and the cached series, in `format`,
    /// gzip or plain.
    pub fn body(
        &self,
        format: Format,
        gzip: bool,
        encode_live: impl FnOnce() -> Vec<u8>,
    ) -> Vec<Bytes> {
        let slot = &self.live[index(format)];
        let fresh = |p: &Arc<LiveParts>| p.made.elapsed() < LIVE_MAX_AGE;
        let cached = slot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|p| fresh(p))
            .cloned();
        let parts = match cached {
            Some(p) => p,
            None => {
                let live = encode_live();
                let [head, tail] = self.gzip_parts(format, &live);
                let p = Arc::new(LiveParts {
                    made: Instant::now(),
                    plain: Bytes::from(live),
                    gzip_head: head,
                    gzip_tail: tail,
                });
                *slot.write().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
                p
            }
        };
        let pieces = self
            .segments
            .iter()
            .flat_map(|s| &s.parts)
            .map(|p| p.of(format));
        let mut chunks = Vec::with_capacity(self.segments.len() * 2 + 2);
        if gzip {
            chunks.push(parts.gzip_head.clone());
            chunks.extend(pieces.map(|p| p.deflated.clone()));
            chunks.push(parts.gzip_tail.clone());
        } else {
            chunks.push(parts.plain.clone());
            chunks.extend(pieces.map(|p| p.text.clone()));
        }
        chunks.retain(|c| !c.is_empty());
        chunks
    }

    /// Bytes of the cached part as plain text.
    pub fn text_len(&self, format: Format) -> usize {
        self.sums[index(format)].1 as usize
    }

    /// Bytes of the cached part as sent gzip-encoded.
    pub fn deflated_len(&self, format: Format) -> usize {
        self.segments.iter().map(|s| s.deflated_len(format)).sum()
    }

    /// Body chunks, uncached (benchmarks): `live`, then the cached series.
    pub fn plain_body(&self, format: Format, live: Vec<u8>) -> Vec<Bytes> {
        let mut chunks = vec![Bytes::from(live)];
        for s in &self.segments {
            chunks.extend(s.text(format));
        }
        chunks
    }

    /// Body chunks of one gzip stream, uncached (benchmarks).
    pub fn gzip_body(&self, format: Format, live: &[u8]) -> Vec<Bytes> {
        let [head, tail] = self.gzip_parts(format, live);
        let mut chunks = vec![head];
        for s in &self.segments {
            chunks.extend(s.parts.iter().map(|p| p.of(format).deflated.clone()));
        }
        chunks.push(tail);
        chunks
    }

    /// The gzip head with `live` compressed and sync-flushed, and the
    /// trailer (final block, CRC, length) for `live` followed by every piece.
    fn gzip_parts(&self, format: Format, live: &[u8]) -> [Bytes; 2] {
        let mut head = Vec::with_capacity(live.len() / 4 + 64);
        head.extend_from_slice(&GZIP_HEADER);
        head.extend(sync_flushed(live, Compression::fast()));
        let (sum, len) = &self.sums[index(format)];
        let mut crc = crc32fast::Hasher::new();
        crc.update(live);
        crc.combine(sum);
        // ISIZE is the length modulo 2^32 (RFC 1952).
        let size = (len + live.len() as u64) as u32;
        let mut tail = Vec::with_capacity(10);
        tail.extend_from_slice(&FINAL_EMPTY_BLOCK);
        tail.extend_from_slice(&crc.finalize().to_le_bytes());
        tail.extend_from_slice(&size.to_le_bytes());
        [Bytes::from(head), Bytes::from(tail)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    pub fn gunzip(chunks: &[Bytes]) -> Vec<u8> {
        let all: Vec<u8> = chunks.iter().flat_map(|b| b.iter().copied()).collect();
        let mut out = Vec::new();
        let mut dec = flate2::read::GzDecoder::new(&all[..]);
        dec.read_to_end(&mut out).unwrap();
        // One member only: nothing may follow the trailer.
        let mut multi = flate2::read::MultiGzDecoder::new(&all[..]);
        let mut out2 = Vec::new();
        multi.read_to_end(&mut out2).unwrap();
        assert_eq!(out, out2);
        out
    }

    fn rendered(name: &str, samples: &str) -> Rendered {
        let mut r = Rendered::default();
        r.header(name, "Help.", Kind::Gauge);
        r.push_str(samples);
        r
    }

    #[test]
    fn both_formats_share_the_samples_and_splice_into_one_stream() {
        let mut samples = String::new();
        for i in 0..3000 {
            samples.push_str(&format!("a_timestamp_seconds{{id=\"{i:012}\"}} {i}\n"));
        }
        let walk = rendered("x_info", "x_info{a=\"1\"} 1\n");
        let poll = rendered("a_timestamp_seconds", &samples);
        let (walk_text, poll_text) = (walk.to_string(Format::Text), poll.to_string(Format::Text));
        let (walk_om, poll_om) = (
            walk.to_string(Format::OpenMetrics),
            poll.to_string(Format::OpenMetrics),
        );
        assert!(walk_om.starts_with("# HELP x Help.\n# TYPE x info\nx_info{"));
        assert!(poll_om.contains("# UNIT a_timestamp_seconds seconds\na_timestamp_seconds{"));
        let exp = Exposition::spliced(vec![
            Arc::new(Segment::new(walk)),
            Arc::new(Segment::new(poll)),
        ]);
        let live = b"x 1\n".to_vec();
        for (format, want) in [
            (Format::Text, format!("x 1\n{walk_text}{poll_text}")),
            (
                Format::OpenMetrics,
                format!("x 1\n{walk_om}{poll_om}# EOF\n"),
            ),
        ] {
            assert_eq!(gunzip(&exp.gzip_body(format, &live)), want.as_bytes());
            assert_eq!(
                exp.plain_body(format, live.clone()).concat(),
                want.as_bytes()
            );
            assert_eq!(
                gunzip(&exp.body(format, true, || live.clone())),
                want.as_bytes()
            );
            assert_eq!(exp.text_len(format) + live.len(), want.len());
        }
        // The samples are compressed once: OpenMetrics adds only its
        // metadata pieces.
        let (text, om) = (
            exp.deflated_len(Format::Text),
            exp.deflated_len(Format::OpenMetrics),
        );
        assert!(om < text + 120, "{om} against {text}");
    }

    #[test]
    fn gzip_of_empty_parts_is_valid() {
        let exp = Exposition::empty();
        assert_eq!(gunzip(&exp.gzip_body(Format::Text, b"")), b"");
        assert_eq!(gunzip(&exp.gzip_body(Format::Text, b"a 1\n")), b"a 1\n");
        assert_eq!(gunzip(&exp.gzip_body(Format::OpenMetrics, b"")), b"# EOF\n");
        let exp = Exposition::new("b 2\n".into());
        assert_eq!(gunzip(&exp.gzip_body(Format::Text, b"")), b"b 2\n");
        let exp = Exposition::spliced(vec![
            Arc::new(Segment::empty()),
            Arc::new(Segment::new("c 3\n".to_owned().into())),
            Arc::new(Segment::new(String::new().into())),
        ]);
        assert_eq!(
            gunzip(&exp.gzip_body(Format::Text, b"x 1\n")),
            b"x 1\nc 3\n"
        );
    }

    #[test]
    fn the_live_part_is_reused_briefly_per_format_and_forgotten_on_demand() {
        let exp = Exposition::new("a 1\n".into());
        let calls = std::cell::Cell::new(0);
        let live = || {
            calls.set(calls.get() + 1);
            format!("x {}\n", calls.get()).into_bytes()
        };
        assert_eq!(exp.body(Format::Text, false, live).concat(), b"x 1\na 1\n");
        assert_eq!(gunzip(&exp.body(Format::Text, true, live)), b"x 1\na 1\n");
        assert_eq!(calls.get(), 1, "encoded once for both scrapes");
        assert_eq!(
            exp.body(Format::OpenMetrics, false, live).concat(),
            b"x 2\na 1\n# EOF\n"
        );
        exp.forget_live();
        assert_eq!(gunzip(&exp.body(Format::Text, true, live)), b"x 3\na 1\n");
        std::thread::sleep(LIVE_MAX_AGE);
        assert_eq!(exp.body(Format::Text, false, live).concat(), b"x 4\na 1\n");
    }
}
