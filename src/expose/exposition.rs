//! The cached bytes of `/metrics`: node_exporter's collector model on
//! pre-rendered, pre-compressed segments.
//!
//! Each producer (the enrollment poll, the organisation walk) renders its
//! series into a [`Rendered`], compresses it into a [`Segment`] off every
//! lock, and swaps it in; the swap splices every segment into one
//! [`Exposition`], and a scrape only puts the live part (the exporter's own
//! metrics, encoded at most every [`LIVE_MAX_AGE`]) in front of it.
//!
//! A segment is a list of parts. Most parts are the same in both formats
//! and kept once; a family's metadata lines, where the text format 0.0.4
//! and OpenMetrics differ ([`crate::expose::openmetrics`]), is a part with a second
//! form. Every part is compressed on its own into a deflate piece that
//! splices before any other ([`crate::expose::deflate::piece`]), so the gzip body of
//! either format is one stream chosen from the same pieces, ended per scrape
//! by the trailer.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

// Tokio's clock: the system's, except in a test on a paused clock.
use tokio::time::Instant;

use bytes::Bytes;
use flate2::Compression;

use crate::expose::deflate::{FINAL_EMPTY_BLOCK, piece, sync_flushed};
use crate::expose::openmetrics::{EOF, Format, Kind, openmetrics_header, text_header};

/// Text a producer renders is compressed in runs of about this many bytes
/// as it goes, so rendering 100,000 accounts (45 MB of text) never holds
/// more than one run of plain text.
pub const RUN_BYTES: usize = 1 << 20;

/// Series as a producer renders them: families, each its metadata in both
/// formats and compressed runs of sample lines. Dereferences to the run
/// being written; [`Rendered::end_of_series`] compresses it once it is
/// large.
pub struct Rendered {
    families: Vec<Family>,
    open: String,
}

impl Default for Rendered {
    fn default() -> Rendered {
        Rendered::new()
    }
}

impl Rendered {
    pub fn new() -> Rendered {
        Rendered {
            families: Vec::new(),
            open: String::new(),
        }
    }

    /// Starts a family: its metadata is a part of its own (with a second
    /// form where OpenMetrics differs), so an exposition can write it once
    /// before the samples of every organisation.
    pub fn header(&mut self, name: &str, help: &str, kind: Kind) {
        self.close_run();
        let mut text = String::new();
        text_header(&mut text, name, help, kind);
        let mut open = String::new();
        openmetrics_header(&mut open, name, help, kind);
        let openmetrics = (text != open).then(|| Piece::new(&open));
        self.families.push(Family {
            name: name.to_owned(),
            header: Some(Part {
                text: Piece::new(&text),
                openmetrics,
            }),
            samples: Vec::new(),
        });
    }

    /// Marks the end of a series (or of an account's series): the run is
    /// compressed once it holds [`RUN_BYTES`].
    pub fn end_of_series(&mut self) {
        if self.open.len() >= RUN_BYTES {
            self.close_run();
        }
    }

    fn close_run(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let part = Part {
            text: Piece::new(&self.open),
            openmetrics: None,
        };
        self.open.clear();
        match self.families.last_mut() {
            Some(family) => family.samples.push(part),
            // Text written before any header (tests, benchmarks).
            None => self.families.push(Family {
                name: String::new(),
                header: None,
                samples: vec![part],
            }),
        }
    }

    /// The whole rendering in one format, inflated (tests, benchmarks).
    pub fn to_string(&self, format: Format) -> String {
        let mut pieces: Vec<Bytes> = self
            .families
            .iter()
            .flat_map(Family::parts)
            .map(|p| p.of(format).deflated.clone())
            .collect();
        pieces.push(Bytes::from(piece(self.open.as_bytes())));
        let text: Vec<u8> = Inflating::new(Bytes::new(), pieces, u64::MAX)
            .flatten()
            .collect();
        String::from_utf8_lossy(&text).into_owned()
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty() && self.open.is_empty()
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
            families: Vec::new(),
            open: text,
        }
    }
}

/// A run of text, kept only as its deflate piece, with the CRC and length
/// of the text.
#[derive(Clone)]
struct Piece {
    deflated: Bytes,
    crc: crc32fast::Hasher,
    len: u64,
}

impl Piece {
    fn new(text: &str) -> Piece {
        let mut crc = crc32fast::Hasher::new();
        crc.update(text.as_bytes());
        Piece {
            deflated: Bytes::from(piece(text.as_bytes())),
            crc,
            len: text.len() as u64,
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

/// One metric family of a segment: its metadata (none for text written
/// without a header) and its samples.
struct Family {
    name: String,
    header: Option<Part>,
    samples: Vec<Part>,
}

impl Family {
    fn parts(&self) -> impl Iterator<Item = &Part> {
        self.header.iter().chain(&self.samples)
    }
}

/// One producer's rendered series, compressed, in both formats.
pub struct Segment {
    families: Vec<Family>,
}

impl Segment {
    /// The rendering's last run compressed (about 1 s per 4.5 MB at
    /// libdeflate's strongest level, spread over the rendering: call both
    /// outside every lock).
    pub fn new(mut rendered: Rendered) -> Segment {
        rendered.close_run();
        Segment {
            families: rendered.families,
        }
    }

    pub fn empty() -> Segment {
        Segment {
            families: Vec::new(),
        }
    }
}

/// `# EOF`, which ends an OpenMetrics body: a segment whose text form is
/// empty.
fn eof() -> Arc<Segment> {
    static EOF_SEGMENT: OnceLock<Arc<Segment>> = OnceLock::new();
    EOF_SEGMENT
        .get_or_init(|| {
            Arc::new(Segment {
                families: vec![Family {
                    name: String::new(),
                    header: None,
                    samples: vec![Part {
                        text: Piece::new(""),
                        openmetrics: Some(Piece::new(EOF)),
                    }],
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

/// What a scrape serves besides the live part: the producers' segments
/// merged family by family, then `# EOF` in OpenMetrics, with each format's
/// combined CRC and length.
///
/// Several organisations render the same families, and both formats want
/// each family in one place with its metadata once: the merge writes a
/// family's header from the first segment that has it, then that family's
/// samples from every segment in order. Families come sorted by name, as
/// `prometheus::TextEncoder` writes them.
///
/// The gzip form is one gzip member whose deflate stream is spliced: each
/// scrape compresses its small live part first (a sync-flushed piece), then
/// come the merged pieces, then the trailer: an empty final block, the
/// CRC and the length. Any gzip reader sees one ordinary stream; the plain
/// form has the same order. Making one is cheap (no rendering, no
/// compressing): a producer's publish swaps its segment and splices anew.
pub struct Exposition {
    /// Per format: the compressed pieces in body order (shared buffers).
    pieces: [Vec<Bytes>; 2],
    /// Per format: CRC and length of the pieces' text.
    sums: [(crc32fast::Hasher, u64); 2],
    /// Per format: the live part as last encoded, reused for [`LIVE_MAX_AGE`].
    live: [RwLock<Option<Arc<LiveParts>>>; 2],
}

/// Consecutive pieces smaller than this are copied into one buffer when an
/// exposition is spliced. Ten organisations make some 150 pieces, many of
/// them a family's metadata of a hundred bytes; a scrape writing each as a
/// buffer of its own served 0.72× what nginx serves of the same bytes
/// (about 1.0× coalesced). The copy is the size of the compressed body at
/// most (1.45 MB at 100,000 accounts).
const COALESCE_BYTES: usize = 1024 * 1024;

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

    /// The segments, merged family by family (in the order they are
    /// given within each family).
    pub fn spliced(segments: Vec<Arc<Segment>>) -> Exposition {
        let mut families: Vec<&Family> = segments.iter().flat_map(|s| &s.families).collect();
        // Stable: each family's segments stay in the order given.
        families.sort_by(|a, b| a.name.cmp(&b.name));
        let eof = eof();
        let mut parts: Vec<&Part> = Vec::new();
        for (i, family) in families.iter().enumerate() {
            let first_of_name = i == 0 || families[i - 1].name != family.name;
            // Text without a header (tests) has no family to merge into.
            if first_of_name || family.name.is_empty() {
                parts.extend(&family.header);
            }
            parts.extend(&family.samples);
        }
        parts.extend(eof.families.iter().flat_map(Family::parts));
        let mut sums: [(crc32fast::Hasher, u64); 2] = Default::default();
        let pieces = FORMATS.map(|format| {
            let (crc, len) = &mut sums[index(format)];
            let mut pieces = Vec::new();
            let mut small = Vec::new();
            for piece in parts.iter().map(|p| p.of(format)) {
                crc.combine(&piece.crc);
                *len += piece.len;
                let deflated = &piece.deflated;
                if small.len() + deflated.len() > COALESCE_BYTES && !small.is_empty() {
                    pieces.push(Bytes::from(std::mem::take(&mut small)));
                }
                if deflated.len() >= COALESCE_BYTES {
                    pieces.push(deflated.clone());
                } else {
                    small.extend_from_slice(deflated);
                }
            }
            if !small.is_empty() {
                pieces.push(Bytes::from(small));
            }
            pieces
        });
        Exposition {
            pieces,
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
            *crate::sync::write(live) = None;
        }
    }

    /// The body of a scrape: the live part (from `encode_live`, or as encoded
    /// less than [`LIVE_MAX_AGE`] ago) and the cached series, in `format`,
    /// gzip (shared buffers) or plain (inflated as it is written).
    pub fn body(&self, format: Format, gzip: bool, encode_live: impl FnOnce() -> Vec<u8>) -> Body {
        let slot = &self.live[index(format)];
        let fresh = |p: &Arc<LiveParts>| p.made.elapsed() < LIVE_MAX_AGE;
        let cached = crate::sync::read(slot)
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
                *crate::sync::write(slot) = Some(p.clone());
                p
            }
        };
        if gzip {
            let mut chunks =
                self.gzip_chunks(format, parts.gzip_head.clone(), parts.gzip_tail.clone());
            chunks.retain(|c| !c.is_empty());
            Body::Whole(chunks)
        } else {
            Body::Inflating(self.inflating(format, parts.plain.clone()))
        }
    }

    /// `head`, then the cached series inflated.
    fn inflating(&self, format: Format, head: Bytes) -> Inflating {
        Inflating::new(
            head,
            self.pieces[index(format)].clone(),
            self.sums[index(format)].1,
        )
    }

    /// One gzip stream: `head`, the cached pieces, `tail`.
    fn gzip_chunks(&self, format: Format, head: Bytes, tail: Bytes) -> Vec<Bytes> {
        let pieces = &self.pieces[index(format)];
        let mut chunks = Vec::with_capacity(pieces.len() + 2);
        chunks.push(head);
        chunks.extend(pieces.iter().cloned());
        chunks.push(tail);
        chunks
    }

    /// Bytes of the cached part as plain text (the soak run reads it).
    pub fn text_len(&self, format: Format) -> usize {
        self.sums[index(format)].1 as usize
    }

    /// The plain body, uncached (benchmarks): `live`, then the cached
    /// series inflated.
    pub fn plain_body(&self, format: Format, live: Vec<u8>) -> Inflating {
        self.inflating(format, Bytes::from(live))
    }

    /// Body chunks of one gzip stream, uncached (benchmarks).
    pub fn gzip_body(&self, format: Format, live: &[u8]) -> Vec<Bytes> {
        let [head, tail] = self.gzip_parts(format, live);
        self.gzip_chunks(format, head, tail)
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

/// A scrape's body: shared buffers as they are (gzip), or the live part
/// then the cached pieces inflated as the body is written (plain text; the
/// compressed pieces are the only copy of the series).
pub enum Body {
    Whole(Vec<Bytes>),
    Inflating(Inflating),
}

impl Body {
    /// All of it in one buffer (tests, tools).
    pub fn concat(self) -> Vec<u8> {
        match self {
            Body::Whole(chunks) => chunks.concat(),
            Body::Inflating(inflating) => inflating.flatten().collect(),
        }
    }
}

/// How much plain text one inflated chunk of a body holds at most.
const INFLATE_CHUNK: usize = 64 * 1024;

/// Plain text from a head and a run of deflate pieces that splice into one
/// stream, produced a chunk at a time: a scrape holds at most one chunk of
/// inflated text whatever the organisation's size.
pub struct Inflating {
    head: Option<Bytes>,
    pieces: std::collections::VecDeque<Bytes>,
    at: usize,
    inflate: flate2::Decompress,
    /// Plain bytes still to come after the head (exact for a scrape).
    left: u64,
}

impl Inflating {
    /// `head` as it is, then `pieces` inflated: `len` bytes of text.
    pub fn new(head: Bytes, pieces: Vec<Bytes>, len: u64) -> Inflating {
        Inflating {
            head: (!head.is_empty()).then_some(head),
            pieces: pieces.into(),
            at: 0,
            inflate: flate2::Decompress::new(false),
            left: len,
        }
    }

    /// Bytes still to come, the head included.
    pub fn remaining(&self) -> u64 {
        self.head.as_ref().map_or(0, |h| h.len() as u64) + self.left
    }

    /// Nothing more to come.
    pub fn is_done(&self) -> bool {
        self.remaining() == 0
    }
}

impl Iterator for Inflating {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if let Some(head) = self.head.take() {
            return Some(head);
        }
        let mut out = Vec::with_capacity(INFLATE_CHUNK);
        while out.len() < out.capacity() {
            // After the last piece, inflate may still hold output.
            let front = self.pieces.front().cloned();
            let input = front.as_ref().map_or(&[][..], |p| &p[self.at..]);
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let status =
                self.inflate
                    .decompress_vec(input, &mut out, flate2::FlushDecompress::Sync);
            let consumed = (self.inflate.total_in() - before_in) as usize;
            let produced = self.inflate.total_out() - before_out;
            self.at += consumed;
            self.left = self.left.saturating_sub(produced);
            match &front {
                None if produced == 0 => break,
                None => {}
                Some(p) if self.at >= p.len() => {
                    self.pieces.pop_front();
                    self.at = 0;
                }
                // Pieces the exporter made itself never get here; should
                // one be damaged, the body ends rather than loops.
                Some(_) if status.is_err() || (consumed == 0 && produced == 0) => {
                    self.pieces.clear();
                    break;
                }
                Some(_) => {}
            }
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

/// Renders and compresses one segment at a time, process-wide. Each render
/// holds a run of plain text and a compressor at libdeflate's strongest
/// level (a few MB); ten organisations whose first polls end together would
/// otherwise hold ten at once, the largest part of the exporter's peak
/// memory. Rendering is CPU-bound and the machine has few cores, so taking
/// turns costs no throughput; it never blocks a scrape (renders run on
/// blocking threads, outside every lock a scrape takes).
pub fn render_in_turn(render: impl FnOnce() -> Segment) -> Arc<Segment> {
    static RENDERING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = crate::sync::lock(&RENDERING);
    Arc::new(render())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of the cached part as sent gzip-encoded.
    fn deflated_len(exp: &Exposition, format: Format) -> usize {
        exp.pieces[index(format)].iter().map(Bytes::len).sum()
    }
    use std::io::Read;

    fn gunzip_body(body: Body) -> Vec<u8> {
        match body {
            Body::Whole(chunks) => gunzip(&chunks),
            Body::Inflating(_) => panic!("a gzip body is whole"),
        }
    }

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
        // Families come sorted by name, whatever the segments' order.
        for (format, want) in [
            (Format::Text, format!("x 1\n{poll_text}{walk_text}")),
            (
                Format::OpenMetrics,
                format!("x 1\n{poll_om}{walk_om}# EOF\n"),
            ),
        ] {
            assert_eq!(gunzip(&exp.gzip_body(format, &live)), want.as_bytes());
            assert_eq!(
                exp.plain_body(format, live.clone())
                    .flatten()
                    .collect::<Vec<u8>>(),
                want.as_bytes()
            );
            assert_eq!(
                gunzip_body(exp.body(format, true, || live.clone())),
                want.as_bytes()
            );
            assert_eq!(exp.text_len(format) + live.len(), want.len());
        }
        // The samples are compressed once: OpenMetrics adds only its
        // metadata pieces.
        let (text, om) = (
            deflated_len(&exp, Format::Text),
            deflated_len(&exp, Format::OpenMetrics),
        );
        assert!(om < text + 120, "{om} against {text}");
    }

    #[test]
    fn large_renderings_are_kept_compressed_in_runs_and_inflated_in_chunks() {
        // 7 MB of text: compressed in runs as it is rendered, never held
        // whole, and inflated a chunk at a time for a plain scrape.
        let mut r = Rendered::new();
        r.header("a_info", "Help.", Kind::Gauge);
        let mut want = String::new();
        for i in 0..80_000u64 {
            let line = format!(
                "a_info{{account_id=\"{:012}\",n=\"{}\"}} 1\n",
                i * 7919,
                i % 97
            );
            r.push_str(&line);
            want.push_str(&line);
            r.end_of_series();
            assert!(r.len() < RUN_BYTES + 200, "the open run stays bounded");
        }
        let text_header = "# HELP a_info Help.\n# TYPE a_info gauge\n";
        let exp = Exposition::spliced(vec![Arc::new(Segment::new(r))]);
        let mut body = exp.plain_body(Format::Text, b"x 1\n".to_vec());
        assert_eq!(
            body.remaining() as usize,
            4 + text_header.len() + want.len()
        );
        let mut got = Vec::new();
        let mut chunks = 0;
        for chunk in body.by_ref() {
            assert!(chunk.len() <= INFLATE_CHUNK);
            got.extend_from_slice(&chunk);
            chunks += 1;
        }
        assert!(body.is_done());
        assert!(chunks > want.len() / INFLATE_CHUNK, "{chunks}");
        assert_eq!(
            String::from_utf8(got).unwrap(),
            format!("x 1\n{text_header}{want}")
        );
        let gz = gunzip(&exp.gzip_body(Format::OpenMetrics, b""));
        assert!(gz.ends_with(b"# EOF\n"));
        assert!(deflated_len(&exp, Format::Text) * 4 < want.len());
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

    /// On tokio's paused clock, so "briefly" is exact on any machine.
    #[tokio::test(start_paused = true)]
    async fn the_live_part_is_reused_briefly_per_format_and_forgotten_on_demand() {
        let exp = Exposition::new("a 1\n".into());
        let calls = std::cell::Cell::new(0);
        let live = || {
            calls.set(calls.get() + 1);
            format!("x {}\n", calls.get()).into_bytes()
        };
        assert_eq!(exp.body(Format::Text, false, live).concat(), b"x 1\na 1\n");
        assert_eq!(
            gunzip_body(exp.body(Format::Text, true, live)),
            b"x 1\na 1\n"
        );
        assert_eq!(calls.get(), 1, "encoded once for both scrapes");
        assert_eq!(
            exp.body(Format::OpenMetrics, false, live).concat(),
            b"x 2\na 1\n# EOF\n"
        );
        exp.forget_live();
        assert_eq!(
            gunzip_body(exp.body(Format::Text, true, live)),
            b"x 3\na 1\n"
        );
        tokio::time::advance(LIVE_MAX_AGE - Duration::from_millis(1)).await;
        assert_eq!(exp.body(Format::Text, false, live).concat(), b"x 3\na 1\n");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(exp.body(Format::Text, false, live).concat(), b"x 4\na 1\n");
    }
}
