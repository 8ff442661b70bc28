//! The journal's files: segments of checksummed records, appended one
//! batch at a time and fsynced behind the writer.
//!
//! A segment is `<dir>/<first lsn, 20 digits>.log`. Each record is
//! `[body length: u32 LE][CRC-32 of the body: u32 LE][body]`, the body a
//! protobuf [`Record`]; lsns follow one another with no gap. A crash can
//! leave the last record of the last segment torn (a short or unchecked
//! write): recovery keeps the records before it. A bad record anywhere else
//! means the files were damaged, and the store refuses to start rather than
//! silently drop acknowledged messages.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use prost::Message as _;
use protocol::pb;

use crate::store::{ConvRow, Notice, Revocation};

/// Largest record body accepted on reading: a batch of 4,096 writes of the
/// largest content fits many times over; anything bigger is damage.
const MAX_RECORD: usize = 256 << 20;

/// A segment is created this big, filled with zeros, and closed once its
/// records fill it. Writing into space that exists spares every fsync the
/// file-size update (an inode write); the zero fill costs about as much
/// as one large batch, once per segment.
const SEGMENT_BYTES: u64 = 8 << 20;

const HEADER: usize = 8;

/// One committed batch: everything it wrote, as the values it wrote, so
/// replaying a record twice leaves the same rows as replaying it once.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    #[prost(uint64, tag = "1")]
    pub lsn: u64,
    /// The batch's clock, the profiles' `updated_ms`.
    #[prost(uint64, tag = "2")]
    pub time_ms: u64,
    #[prost(message, repeated, tag = "3")]
    pub messages: Vec<pb::Message>,
    #[prost(message, repeated, tag = "4")]
    pub rows: Vec<Row>,
    #[prost(message, repeated, tag = "5")]
    pub profiles: Vec<pb::Profile>,
    #[prost(message, repeated, tag = "6")]
    pub revocations: Vec<Revocation>,
    /// Offline notifications recorded with this batch's messages.
    #[prost(message, repeated, tag = "7")]
    pub notices: Vec<Notice>,
    /// Notifications the outbox delivered (or let expire): removed.
    #[prost(message, repeated, tag = "8")]
    pub notices_done: Vec<Notice>,
}

impl Record {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.rows.is_empty()
            && self.profiles.is_empty()
            && self.revocations.is_empty()
            && self.notices.is_empty()
            && self.notices_done.is_empty()
    }
}

/// A conversation row as the journal stores it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Row {
    #[prost(uint64, tag = "1")]
    pub owner: u64,
    #[prost(uint64, tag = "2")]
    pub peer: u64,
    #[prost(uint64, tag = "3")]
    pub last_seq: u64,
    #[prost(uint64, tag = "4")]
    pub last_msg_id: u64,
    #[prost(uint64, tag = "5")]
    pub read_seq: u64,
    #[prost(uint64, tag = "6")]
    pub peer_read_seq: u64,
    #[prost(uint64, tag = "7")]
    pub deleted_up_to: u64,
    #[prost(bool, tag = "8")]
    pub hidden: bool,
    #[prost(uint64, tag = "9")]
    pub updated_ms: u64,
    #[prost(uint64, tag = "10")]
    pub version: u64,
}

impl From<&ConvRow> for Row {
    fn from(r: &ConvRow) -> Row {
        Row {
            owner: r.owner,
            peer: r.peer,
            last_seq: r.last_seq,
            last_msg_id: r.last_msg_id,
            read_seq: r.read_seq,
            peer_read_seq: r.peer_read_seq,
            deleted_up_to: r.deleted_up_to,
            hidden: r.hidden,
            updated_ms: r.updated_ms,
            version: r.version,
        }
    }
}

impl From<&Row> for ConvRow {
    fn from(r: &Row) -> ConvRow {
        ConvRow {
            owner: r.owner,
            peer: r.peer,
            last_seq: r.last_seq,
            last_msg_id: r.last_msg_id,
            read_seq: r.read_seq,
            peer_read_seq: r.peer_read_seq,
            deleted_up_to: r.deleted_up_to,
            hidden: r.hidden,
            updated_ms: r.updated_ms,
            version: r.version,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("journal i/o on {path}: {source}{}", disk_full_note(source))]
    Io { path: PathBuf, source: io::Error },
    #[error("journal damaged: {0}")]
    Damaged(String),
}

/// Whether an I/O error means no space (or a read-only file system):
/// writes are refused until that changes, reads go on.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::ReadOnlyFilesystem
    )
}

/// Says "disk full" in words an operator greps for.
fn disk_full_note(e: &io::Error) -> &'static str {
    match is_disk_full(e) {
        true => " (disk full or read-only: writes are refused until space is freed)",
        false => "",
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.log"))
}

/// The segments in `dir`, oldest first, by first lsn.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let path = entry.map_err(io_at(dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            found.push((first, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Every record in `dir`, in lsn order; a torn last record is left out.
pub fn read_all(dir: &Path) -> Result<Vec<Record>, LogError> {
    let segments = segments(dir)?;
    let mut records: Vec<Record> = Vec::new();
    for (n, (first, path)) in segments.iter().enumerate() {
        let last_segment = n + 1 == segments.len();
        let bytes = fs::read(path).map_err(io_at(path))?;
        let mut at = 0;
        while at < bytes.len() {
            match decode(&bytes[at..]) {
                Ok(None) => break,
                Ok(Some((record, used))) => {
                    let expected = records.last().map_or(*first, |r| r.lsn + 1);
                    if record.lsn != expected {
                        return Err(LogError::Damaged(format!(
                            "{}: record {} where {expected} was due",
                            path.display(),
                            record.lsn
                        )));
                    }
                    records.push(record);
                    at += used;
                }
                Err(why) if last_segment => {
                    log::warn!(
                        "journal {}: the last {} bytes are a torn write ({why}), left out",
                        path.display(),
                        bytes.len() - at
                    );
                    break;
                }
                Err(why) => {
                    return Err(LogError::Damaged(format!(
                        "{} at byte {at}: {why}",
                        path.display()
                    )));
                }
            }
        }
    }
    Ok(records)
}

/// One record from the front of `bytes` and how many bytes it took, or
/// `None` where the segment's unwritten space begins.
fn decode(bytes: &[u8]) -> Result<Option<(Record, usize)>, String> {
    if bytes.len() < HEADER {
        return Err("short header".into());
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if len == 0 {
        // The zero fill: no record was written here (a record is never empty).
        return Ok(None);
    }
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len > MAX_RECORD {
        return Err(format!("length {len} out of bounds"));
    }
    let Some(body) = bytes.get(HEADER..HEADER + len) else {
        return Err("short body".into());
    };
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    let record = Record::decode(body).map_err(|e| e.to_string())?;
    Ok(Some((record, HEADER + len)))
}

fn encode(record: &Record, out: &mut Vec<u8>) {
    out.clear();
    out.resize(HEADER, 0);
    record.encode(out).expect("a Vec grows to fit any record");
    let len = (out.len() - HEADER) as u32;
    let crc = crc32fast::hash(&out[HEADER..]);
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Deletes every segment in `dir`.
pub fn remove_all(dir: &Path) -> Result<(), LogError> {
    for (_, path) in segments(dir)? {
        fs::remove_file(&path).map_err(io_at(&path))?;
    }
    Ok(())
}

/// A segment file and its name (for errors).
pub struct Segment {
    file: File,
    path: PathBuf,
}

/// What another thread needs to make written records durable: the open
/// segment and how far records have been written. The writer appends
/// without waiting; the flusher (`mod.rs`) fdatasyncs behind it, one sync
/// for every record written meanwhile.
pub struct Tail {
    segment: Mutex<Arc<Segment>>,
    /// The lsn of the last record written (not necessarily on disk).
    written: AtomicU64,
    /// An fdatasync failed: the kernel may have dropped the pages, what is
    /// on disk is unknown, and nothing more is appended or flushed.
    failed: AtomicBool,
    /// fdatasync at all (`synchronous = full`).
    sync: bool,
    /// Tests: the next fdatasync fails, as a dying disk's would.
    #[cfg(test)]
    fail_next: AtomicBool,
}

impl Tail {
    /// Makes every record written so far durable; returns the last one's
    /// lsn. Closed segments were synced when they were closed.
    pub fn sync(&self) -> Result<u64, LogError> {
        // `written` first: a rotation syncs the old segment before the
        // new one is published, so whichever segment is read below holds
        // every record up to `written` that is not already on disk.
        let written = self.written.load(Ordering::Acquire);
        if self.failed.load(Ordering::Acquire) {
            return Err(self.failure());
        }
        if self.sync {
            let segment = self.segment.lock().clone();
            if let Err(e) = self.fdatasync(&segment.file) {
                self.failed.store(true, Ordering::Release);
                return Err(io_at(&segment.path)(e));
            }
        }
        Ok(written)
    }

    fn fdatasync(&self, file: &File) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_next.swap(false, Ordering::AcqRel) {
            return Err(io::Error::other("injected fdatasync failure"));
        }
        file.sync_data()
    }

    #[cfg(test)]
    pub fn fail_next_sync(&self) {
        self.fail_next.store(true, Ordering::Release);
    }

    fn failure(&self) -> LogError {
        LogError::Damaged(format!(
            "{}: an earlier write or fdatasync failed; restart to recover",
            self.segment.lock().path.display()
        ))
    }
}

/// The open end of the journal: appends records, starts new segments,
/// deletes the ones the store no longer needs.
pub struct JournalFile {
    dir: PathBuf,
    segment: Arc<Segment>,
    tail: Arc<Tail>,
    len: u64,
    /// The segment file's length: zero-filled ahead of `len`, or as far as
    /// records that ran past its end took it.
    allocated: u64,
    /// Closed segments, oldest first: (first lsn, path).
    closed: VecDeque<(u64, PathBuf)>,
    /// The current segment's first lsn.
    first_lsn: u64,
    buf: Vec<u8>,
}

impl JournalFile {
    /// Starts an empty segment whose first record will be `first_lsn`
    /// (`dir` must hold no segment). `sync`: fdatasync on flush.
    pub fn create(dir: &Path, first_lsn: u64, sync: bool) -> Result<JournalFile, LogError> {
        let path = segment_path(dir, first_lsn);
        let segment = Arc::new(Segment {
            file: open_segment(dir, &path)?,
            path,
        });
        Ok(JournalFile {
            dir: dir.to_owned(),
            tail: Arc::new(Tail {
                segment: Mutex::new(segment.clone()),
                written: AtomicU64::new(first_lsn - 1),
                failed: AtomicBool::new(false),
                sync,
                #[cfg(test)]
                fail_next: AtomicBool::new(false),
            }),
            segment,
            len: 0,
            allocated: SEGMENT_BYTES,
            closed: VecDeque::new(),
            first_lsn,
            buf: Vec::new(),
        })
    }

    /// The handle that flushes what this file wrote.
    pub fn tail(&self) -> Arc<Tail> {
        self.tail.clone()
    }

    /// Writes one record after the last, without waiting for the disk
    /// ([`Tail::sync`] does). After an error nothing of the record counts:
    /// what of it landed in the file's allocated space is zeroed again and
    /// what ran past the file's end is cut off, neither of which needs free
    /// space, so a full disk refuses this record and the next one goes in
    /// once space is freed. If even that fails, every later append is
    /// refused (what is on disk is no longer known).
    pub fn append(&mut self, record: &Record) -> Result<(), LogError> {
        if self.tail.failed.load(Ordering::Acquire) {
            return Err(self.tail.failure());
        }
        encode(record, &mut self.buf);
        let file = &self.segment.file;
        if let Err(e) = file.write_all_at(&self.buf, self.len) {
            let inside = (self.allocated.saturating_sub(self.len) as usize).min(self.buf.len());
            let undone = file
                .write_all_at(&vec![0; inside], self.len)
                .and_then(|()| file.set_len(self.allocated));
            if let Err(undo) = undone {
                log::error!(
                    "journal: cannot undo a failed write in {} ({undo}); no more writes until a restart",
                    self.segment.path.display()
                );
                self.tail.failed.store(true, Ordering::Release);
            }
            return Err(io_at(&self.segment.path)(e));
        }
        self.len += self.buf.len() as u64;
        self.allocated = self.allocated.max(self.len);
        self.tail.written.store(record.lsn, Ordering::Release);
        Ok(())
    }

    /// Starts a new segment at `next_lsn` if the current one is full. The
    /// full one is synced first, so a flush only ever syncs the open one.
    pub fn rotate_if_full(&mut self, next_lsn: u64) -> Result<(), LogError> {
        if self.len < SEGMENT_BYTES {
            return Ok(());
        }
        self.tail.sync()?;
        let path = segment_path(&self.dir, next_lsn);
        let segment = Arc::new(Segment {
            file: open_segment(&self.dir, &path)?,
            path,
        });
        let old = std::mem::replace(&mut self.segment, segment.clone());
        *self.tail.segment.lock() = segment;
        self.closed.push_back((self.first_lsn, old.path.clone()));
        self.first_lsn = next_lsn;
        self.len = 0;
        self.allocated = SEGMENT_BYTES;
        Ok(())
    }

    /// Deletes the closed segments whose every record is at or below
    /// `applied` (stored durably elsewhere).
    pub fn forget_applied(&mut self, applied: u64) {
        while let Some((_, path)) = self.closed.front() {
            let next_first = self
                .closed
                .get(1)
                .map_or(self.first_lsn, |(first, _)| *first);
            if next_first > applied + 1 {
                break;
            }
            if let Err(e) = fs::remove_file(path) {
                log::warn!("cannot delete journal segment {}: {e}", path.display());
                break;
            }
            self.closed.pop_front();
        }
    }
}

/// A zero-filled segment made ahead of need, waiting to be renamed into
/// place (`prepare_spare`), so a rotation costs a rename, not 8 MiB of writes.
const SPARE: &str = "spare.ready";
const SPARE_IN_PROGRESS: &str = "spare.tmp";

/// Makes a spare segment if there is none; returns whether it made one.
/// Called by the applier between commits, off the writer's path.
pub fn prepare_spare(dir: &Path) -> Result<bool, LogError> {
    if dir.join(SPARE).exists() {
        return Ok(false);
    }
    let tmp = dir.join(SPARE_IN_PROGRESS);
    let _ = fs::remove_file(&tmp);
    drop(zero_filled(&tmp)?);
    fs::rename(&tmp, dir.join(SPARE)).map_err(io_at(&tmp))?;
    Ok(true)
}

/// Creates a segment file, from the spare if one is ready, and makes its
/// name durable.
fn open_segment(dir: &Path, path: &Path) -> Result<File, LogError> {
    let file = match fs::rename(dir.join(SPARE), path) {
        Ok(()) => OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_at(path))?,
        Err(_) => zero_filled(path)?,
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))?;
    Ok(file)
}

/// A new file of `SEGMENT_BYTES` zeros, on disk; on failure (a full disk)
/// none, so that a later try can make it.
fn zero_filled(path: &Path) -> Result<File, LogError> {
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .map_err(io_at(path))?;
    let zeros = vec![0; 1 << 20];
    let filled = (0..SEGMENT_BYTES / zeros.len() as u64)
        .try_for_each(|chunk| file.write_all_at(&zeros, chunk * zeros.len() as u64))
        .and_then(|()| file.sync_all());
    if let Err(e) = filled {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(io_at(path)(e));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(lsn: u64, messages: usize) -> Record {
        Record {
            lsn,
            time_ms: 1_700_000_000_000 + lsn,
            messages: (0..messages as u64)
                .map(|n| pb::Message {
                    msg_id: lsn * 100 + n,
                    from_uid: 1,
                    to_uid: 2,
                    seq: n + 1,
                    client_msg_id: format!("c{lsn}-{n}"),
                    content_type: 1,
                    content: vec![7; 40],
                    server_time_ms: 5,
                })
                .collect(),
            rows: vec![Row::from(&ConvRow::new(1, 2))],
            profiles: vec![pb::Profile {
                uid: 1,
                nickname: "n".into(),
                avatar_url: String::new(),
            }],
            revocations: Vec::new(),
            notices: vec![Notice {
                msg_id: lsn * 100,
                to_uid: 2,
                from_uid: 1,
                seq: 1,
                created_ms: 5,
            }],
            notices_done: Vec::new(),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("im-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn records_come_back_in_order() {
        let dir = temp_dir("order");
        let mut log = JournalFile::create(&dir, 1, true).unwrap();
        let written: Vec<Record> = (1..=5).map(|lsn| record(lsn, lsn as usize)).collect();
        for r in &written {
            log.append(r).unwrap();
        }
        assert_eq!(read_all(&dir).unwrap(), written);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_record_is_left_out_and_a_damaged_middle_is_refused() {
        let dir = temp_dir("torn");
        let mut log = JournalFile::create(&dir, 1, false).unwrap();
        for lsn in 1..=3 {
            log.append(&record(lsn, 3)).unwrap();
        }
        let path = segment_path(&dir, 1);
        let full = fs::read(&path).unwrap();
        // Tear the last record (its end never reached the disk): the
        // first two survive.
        let end = log.len as usize;
        let mut torn = full.clone();
        torn[end - 10..end].fill(0);
        fs::write(&path, &torn).unwrap();
        let back = read_all(&dir).unwrap();
        assert_eq!(back.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![1, 2]);
        // Flip a byte in the first record and add a later segment: that
        // is damage, not a torn tail.
        let mut bad = full.clone();
        bad[HEADER + 3] ^= 0xff;
        fs::write(&path, &bad).unwrap();
        let mut later = JournalFile::create(&dir, 4, false).unwrap();
        later.append(&record(4, 1)).unwrap();
        assert!(matches!(read_all(&dir), Err(LogError::Damaged(_))));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_rotation_takes_the_spare() {
        let dir = temp_dir("spare");
        let mut log = JournalFile::create(&dir, 1, false).unwrap();
        assert!(prepare_spare(&dir).unwrap());
        assert!(!prepare_spare(&dir).unwrap(), "one spare at a time");
        log.append(&record(1, 1)).unwrap();
        log.len = SEGMENT_BYTES;
        log.rotate_if_full(2).unwrap();
        assert!(!dir.join(SPARE).exists(), "the spare became segment 2");
        log.append(&record(2, 1)).unwrap();
        assert_eq!(segments(&dir).unwrap().len(), 2);
        assert_eq!(read_all(&dir).unwrap().len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sync_covers_what_was_written_also_across_a_rotation() {
        let dir = temp_dir("tail");
        let mut log = JournalFile::create(&dir, 1, true).unwrap();
        let tail = log.tail();
        assert_eq!(tail.sync().unwrap(), 0, "nothing written yet");
        log.append(&record(1, 2)).unwrap();
        log.append(&record(2, 2)).unwrap();
        assert_eq!(tail.sync().unwrap(), 2);
        log.append(&record(3, 1)).unwrap();
        log.len = SEGMENT_BYTES;
        log.rotate_if_full(4).unwrap();
        // Record 3 is in the closed segment, synced by the rotation; the
        // flusher's handle now points at the new one.
        assert_eq!(tail.sync().unwrap(), 3);
        log.append(&record(4, 1)).unwrap();
        assert_eq!(tail.sync().unwrap(), 4);
        assert_eq!(read_all(&dir).unwrap().len(), 4);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_gap_in_lsns_is_refused() {
        let dir = temp_dir("gap");
        let mut log = JournalFile::create(&dir, 1, false).unwrap();
        log.append(&record(1, 1)).unwrap();
        log.append(&record(3, 1)).unwrap();
        assert!(matches!(read_all(&dir), Err(LogError::Damaged(_))));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn applied_segments_are_deleted_and_the_rest_kept() {
        let dir = temp_dir("rotate");
        let mut log = JournalFile::create(&dir, 1, false).unwrap();
        log.append(&record(1, 1)).unwrap();
        log.len = SEGMENT_BYTES; // as if full
        log.rotate_if_full(2).unwrap();
        log.append(&record(2, 1)).unwrap();
        log.len = SEGMENT_BYTES;
        log.rotate_if_full(3).unwrap();
        log.append(&record(3, 1)).unwrap();
        assert_eq!(segments(&dir).unwrap().len(), 3);
        log.forget_applied(0);
        assert_eq!(segments(&dir).unwrap().len(), 3);
        log.forget_applied(1);
        assert_eq!(segments(&dir).unwrap().len(), 2);
        log.forget_applied(3);
        // The open segment stays whatever was applied.
        assert_eq!(segments(&dir).unwrap().len(), 1);
        assert_eq!(
            read_all(&dir)
                .unwrap()
                .iter()
                .map(|r| r.lsn)
                .collect::<Vec<_>>(),
            vec![3]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
