//! Seeded mutation fuzzing of the volume readers (cargo fuzz needs nightly).
//!
//! Valid small files (NIfTI `.nii`, `.nii.gz`, `.hdr`/`.img`; NRRD with
//! raw, gzip and ascii data) are mutated with bit flips, interesting byte
//! and word values, truncation, splices and header-field-targeted edits,
//! written to a temporary folder and read back. Every read must return
//! (never panic), and every error must name the file.
//!
//! `DTML_FUZZ_ITERS` sets the inputs per format (default 2000, a few
//! seconds); `DTML_FUZZ_SEED` changes the seed; `DTML_FUZZ_VERBOSE=1`
//! prints the most frequent error messages (to see what the inputs reach). Inputs that panic are kept
//! under `target/fuzz-findings/` and the test fails listing them.
//!
//! One file over 600 lines on purpose: the seed files, the mutators and
//! the harness are one fuzzer, and each test file is a binary to link.

use dtml_volume::{Geometry, Volume, VoxelData, Xyz, read_volume, write_nifti};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const DEFAULT_ITERS: usize = 2000;
const DEFAULT_SEED: u64 = 0x00d7_3a1f_u64;

fn iterations() -> usize {
    std::env::var("DTML_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERS)
}

fn seed(salt: u64) -> u64 {
    std::env::var("DTML_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED)
        ^ salt
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------
// Mutations.

const BYTES: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'\n', b' ', b':', b'(', b'-'];
const WORDS: &[u32] = &[
    0,
    1,
    0xffff_ffff,
    0x7fff_ffff,
    0x8000_0000,
    0x7fff,
    0x8000,
    0xffff,
    0x0100,
    0x7f80_0000, // f32 +inf
    0x7fc0_0000, // f32 NaN
    0x4f80_0000, // f32 2^32
];

/// One generic mutation of a byte buffer.
fn mutate_bytes(rng: &mut ChaCha8Rng, b: &mut Vec<u8>) {
    if b.is_empty() {
        b.push(rng.random());
        return;
    }
    match rng.random_range(0..7) {
        0 => {
            let i = rng.random_range(0..b.len());
            b[i] ^= 1 << rng.random_range(0..8);
        }
        1 => {
            let i = rng.random_range(0..b.len());
            b[i] = BYTES[rng.random_range(0..BYTES.len())];
        }
        2 => {
            let i = rng.random_range(0..b.len());
            b[i] = rng.random();
        }
        3 => {
            let w = WORDS[rng.random_range(0..WORDS.len())];
            let width = [2usize, 4][rng.random_range(0..2)];
            let bytes = if rng.random_bool(0.5) {
                w.to_le_bytes()
            } else {
                w.to_be_bytes()
            };
            let i = rng.random_range(0..b.len());
            for (k, &x) in bytes[..width].iter().enumerate() {
                if let Some(slot) = b.get_mut(i + k) {
                    *slot = x;
                }
            }
        }
        4 => {
            let n = rng.random_range(0..=b.len());
            b.truncate(n);
        }
        5 => {
            // Duplicate or insert a chunk.
            let i = rng.random_range(0..b.len());
            let n = rng.random_range(1..=16.min(b.len() - i));
            let chunk = b[i..i + n].to_vec();
            let at = rng.random_range(0..=b.len());
            b.splice(at..at, chunk);
        }
        _ => {
            let i = rng.random_range(0..b.len());
            let n = rng.random_range(1..=16.min(b.len() - i));
            b.drain(i..i + n);
        }
    }
}

/// NIfTI-1 header fields: (offset, width) of dims, datatype, bitpix,
/// pixdim, vox_offset, scl_slope/inter, qform/sform codes, quatern,
/// srow, sizeof_hdr, magic.
const NIFTI_FIELDS: &[(usize, usize)] = &[
    (0, 4),
    (40, 2),
    (42, 2),
    (44, 2),
    (46, 2),
    (48, 2),
    (50, 2),
    (70, 2),
    (72, 2),
    (76, 4),
    (80, 4),
    (84, 4),
    (88, 4),
    (108, 4),
    (112, 4),
    (116, 4),
    (252, 2),
    (254, 2),
    (256, 4),
    (260, 4),
    (268, 4),
    (280, 4),
    (296, 4),
    (312, 4),
    (344, 4),
];

fn mutate_nifti_field(rng: &mut ChaCha8Rng, b: &mut [u8]) {
    let (off, width) = NIFTI_FIELDS[rng.random_range(0..NIFTI_FIELDS.len())];
    if off + width > b.len() {
        return;
    }
    let value: u32 = match rng.random_range(0..4) {
        0 => WORDS[rng.random_range(0..WORDS.len())],
        1 => rng.random_range(0..10),
        2 => {
            [2u32, 4, 8, 16, 64, 256, 512, 768, 1024, 1280, 32, 128, 2304][rng.random_range(0..13)]
        }
        _ => rng.random(),
    };
    // The seeds are little-endian; sometimes write big-endian to confuse
    // the byte-order detection.
    let bytes = if rng.random_bool(0.8) {
        value.to_le_bytes()
    } else {
        value.to_be_bytes()
    };
    b[off..off + width].copy_from_slice(&bytes[..width]);
    if off == 108 && rng.random_bool(0.5) {
        // A float vox_offset.
        let v = [0.0f32, 352.0, 348.0, -1.0, 1e30, 353.5, 4096.0][rng.random_range(0..7)];
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
}

const NRRD_VALUES: &[(&str, &[&str])] = &[
    (
        "sizes",
        &[
            "0 1 1",
            "-1 2 2",
            "18446744073709551615 2 2",
            "4294967296 4294967296 2",
            "99999999 99999 9",
            "1 1 1",
            "2 3",
            "2 3 4 5",
            "a b c",
            "",
        ],
    ),
    (
        "dimension",
        &["0", "1", "2", "4", "5", "-3", "99999999999999999999", "x"],
    ),
    (
        "type",
        &[
            "uchar",
            "short",
            "float",
            "double",
            "int64",
            "block",
            "unsigned",
            "ushort",
            "int",
            "",
            "signed char",
        ],
    ),
    (
        "encoding",
        &[
            "raw", "gzip", "gz", "ascii", "hex", "bzip2", "text", "", "zrl",
        ],
    ),
    ("endian", &["little", "big", "middle", ""]),
    (
        "byte skip",
        &[
            "-1",
            "-2",
            "0",
            "1",
            "100000000000",
            "18446744073709551615",
            "x",
        ],
    ),
    (
        "line skip",
        &["0", "1", "5", "18446744073709551615", "-1", "1e3"],
    ),
    (
        "space",
        &[
            "left-posterior-superior",
            "RAS",
            "LAS",
            "scanner-xyz",
            "3D-right-handed",
            "nowhere",
            "",
        ],
    ),
    ("space dimension", &["2", "3", "4", "0", "x"]),
    (
        "space directions",
        &[
            "(1,0,0) (0,1,0) (0,0,1)",
            "none (1,0,0) (0,1,0)",
            "(1,0,0) (1,0,0) (0,0,1)",
            "(0,0,0) (0,1,0) (0,0,1)",
            "(nan,0,0) (0,1,0) (0,0,1)",
            "(1e308,1e308,0) (0,1e308,0) (0,0,1e308)",
            "(1,0) (0,1) (0,0)",
            "((1,0,0) (0,1,0)",
            "(1,0,0",
            "none none none",
            "",
        ],
    ),
    (
        "space origin",
        &["(0,0,0)", "none", "(inf,0,0)", "(1,2)", "(1,2,3", "garbage"],
    ),
    (
        "spacings",
        &["1 1 1", "nan nan nan", "0 -1 inf", "1 1", "x y z"],
    ),
    (
        "kinds",
        &[
            "domain domain domain",
            "list domain domain",
            "??? space vector",
            "a",
        ],
    ),
    (
        "data file",
        &[
            "LIST",
            "missing.raw",
            "f%03d.raw 0 9 1",
            "",
            "/",
            ".",
            "../x",
        ],
    ),
];

/// A header-targeted NRRD mutation: change, drop, duplicate or add a field.
fn mutate_nrrd_header(rng: &mut ChaCha8Rng, b: &mut Vec<u8>) {
    let end = b
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| p + 1)
        .unwrap_or(b.len());
    let header = String::from_utf8_lossy(&b[..end]).into_owned();
    let mut lines: Vec<String> = header.lines().map(str::to_string).collect();
    let data = b[end..].to_vec();
    let (field, values) = NRRD_VALUES[rng.random_range(0..NRRD_VALUES.len())];
    let value = values[rng.random_range(0..values.len())];
    let existing = lines
        .iter()
        .position(|l| l.split(':').next() == Some(field));
    match (rng.random_range(0..4), existing) {
        (0, Some(i)) => {
            lines.remove(i);
        }
        (1, Some(i)) => {
            let dup = lines[i].clone();
            lines.insert(i, dup);
        }
        (2, _) if lines.len() > 1 => {
            let i = rng.random_range(1..lines.len());
            let j = rng.random_range(1..lines.len());
            lines.swap(i, j);
        }
        (_, Some(i)) => lines[i] = format!("{field}: {value}"),
        (_, None) => {
            let at = rng.random_range(1..=lines.len().max(1));
            lines.insert(at.min(lines.len()), format!("{field}: {value}"));
        }
    }
    let mut out = lines.join("\n").into_bytes();
    out.extend_from_slice(b"\n");
    out.extend_from_slice(&data);
    *b = out;
}

// ---------------------------------------------------------------------------
// Seeds.

fn seed_volumes() -> Vec<Volume> {
    let g = Geometry::from_affine([
        [-0.625, 0.0, 0.0, 10.0],
        [0.0, -0.625, 0.0, -20.0],
        [0.0, 0.0, 2.5, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    vec![
        Volume::new(
            VoxelData::U8((0..24).map(|i| if i % 3 == 0 { 1 } else { 0 }).collect()),
            Xyz::new(4, 3, 2),
            g.clone(),
        )
        .unwrap(),
        Volume::new(
            VoxelData::I16((0..30).map(|i| i * 97 - 1000).collect()),
            Xyz::new(5, 3, 2),
            g.clone(),
        )
        .unwrap(),
        Volume::new(
            VoxelData::F32((0..12).map(|i| i as f32 * 0.25).collect()),
            Xyz::new(2, 3, 2),
            Geometry::from_spacing(Xyz::new(1.0, 2.0, 3.0)),
        )
        .unwrap(),
    ]
}

/// `.nii` bytes of a seed volume, via the real writer.
fn nii_bytes(dir: &Path, v: &Volume) -> Vec<u8> {
    let p = dir.join("seed.nii");
    write_nifti(&p, v).unwrap();
    std::fs::read(&p).unwrap()
}

fn nrrd_seeds() -> Vec<Vec<u8>> {
    let header = |ty: &str, enc: &str, sizes: &str| {
        format!(
            "NRRD0004\n# comment\ntype: {ty}\ndimension: 3\nspace: left-posterior-superior\n\
             sizes: {sizes}\nspace directions: (0.625,0,0) (0,0.625,0) (0,0,2.5)\n\
             kinds: domain domain domain\nendian: little\nencoding: {enc}\n\
             space origin: (-10,20,-30)\nITK_InputFilterName:=NrrdImageIO\n\n"
        )
    };
    let label: Vec<u8> = (0..24).map(|i| if i % 3 == 0 { 255 } else { 0 }).collect();
    let image: Vec<u8> = (0..30i16)
        .flat_map(|i| (i * 97 - 1000).to_le_bytes())
        .collect();
    let with = |h: String, d: &[u8]| {
        let mut v = h.into_bytes();
        v.extend_from_slice(d);
        v
    };
    vec![
        with(header("unsigned char", "gzip", "4 3 2"), &gzip(&label)),
        with(header("unsigned char", "raw", "4 3 2"), &label),
        with(header("short", "raw", "5 3 2"), &image),
        with(header("short", "gzip", "5 3 2"), &gzip(&image)),
        with(
            "NRRD0005\ntype: float\ndimension: 3\nsizes: 2 2 2\nspacings: 0.5 nan 2\n\
             endian: big\nencoding: raw\n\n"
                .to_string(),
            &(0..8)
                .flat_map(|i| (i as f32 * 1.5).to_be_bytes())
                .collect::<Vec<_>>(),
        ),
        with(
            "NRRD0004\ntype: int16\ndimension: 4\nspace: RAS\nsizes: 1 2 2 2\n\
             space directions: none (1,0,0) (0,1,0) (0,0,1)\nkinds: list domain domain domain\n\
             encoding: ascii\nbyte skip: 0\nline skip: 1\n\n"
                .to_string(),
            b"skipped line\n1 2 3 4\n5 6 7 8\n",
        ),
    ]
}

// ---------------------------------------------------------------------------
// The harness.

struct Harness {
    dir: tempfile::TempDir,
    tried: usize,
    ok: usize,
    panics: Vec<String>,
    /// Error messages with the folder and numbers blanked, counted.
    errors: std::collections::HashMap<String, usize>,
}

thread_local! {
    /// Whether this thread is inside a fuzzed read (whose panics we catch).
    static IN_READ: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Messages of panics caught in fuzzed reads (the default hook would print
/// every caught panic; ours records it instead).
static PANIC_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_READ.with(|f| f.get()) {
                let loc = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                PANIC_MESSAGES
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{msg} at {loc}"));
            } else {
                default(info);
            }
        }));
    });
}

impl Harness {
    fn new() -> Harness {
        install_quiet_hook();
        Harness {
            dir: tempfile::tempdir().unwrap(),
            tried: 0,
            ok: 0,
            panics: Vec::new(),
            errors: Default::default(),
        }
    }

    /// Writes the files, reads `main`, checks the outcome.
    fn check(&mut self, format: &str, files: &[(&str, &[u8])], main: &str) {
        for (name, bytes) in files {
            std::fs::write(self.dir.path().join(name), bytes).unwrap();
        }
        let path = self.dir.path().join(main);
        self.tried += 1;
        IN_READ.with(|f| f.set(true));
        let result = catch_unwind(AssertUnwindSafe(|| read_volume(&path)));
        IN_READ.with(|f| f.set(false));
        match result {
            Ok(Ok(v)) => {
                self.ok += 1;
                assert_eq!(
                    v.data.len(),
                    v.shape.voxels(),
                    "{format}: a read volume's data do not match its shape"
                );
                assert!(v.shape.all(|s| s > 0));
                if format.starts_with("nrrd") || format == "nhdr" {
                    // NRRD geometry is checked on reading: finite, non-degenerate.
                    let finite = v.affine().iter().flatten().all(|x| x.is_finite());
                    let spacing = v.spacing().all(|s| s.is_finite() && s > 0.0);
                    assert!(
                        finite && spacing,
                        "{format}: {} read with affine {:?}, spacing {:?}",
                        path.display(),
                        v.affine(),
                        v.spacing()
                    );
                }
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                // A header/data pair may name either file; both share the stem.
                let stem = main.split('.').next().unwrap();
                assert!(
                    msg.contains(&self.dir.path().display().to_string()) && msg.contains(stem),
                    "{format}: error does not name the file: {msg}"
                );
                let class: String = msg
                    .replace(&self.dir.path().display().to_string(), "")
                    .chars()
                    .map(|c| if c.is_ascii_digit() { '#' } else { c })
                    .take(100)
                    .collect();
                *self.errors.entry(class).or_default() += 1;
            }
            Err(_) => {
                let message = PANIC_MESSAGES
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop()
                    .unwrap_or_default();
                let keep = findings_dir().join(format!("{format}-{}", self.panics.len()));
                std::fs::create_dir_all(&keep).unwrap();
                for (name, bytes) in files {
                    std::fs::write(keep.join(name), bytes).unwrap();
                }
                self.panics
                    .push(format!("{format}: {} panicked: {message}", keep.display()));
            }
        }
        for (name, _) in files {
            let _ = std::fs::remove_file(self.dir.path().join(name));
        }
    }

    fn finish(&self, what: &str) {
        eprintln!(
            "fuzz {what}: tried {} inputs, {} read without error, {} panicked",
            self.tried,
            self.ok,
            self.panics.len()
        );
        if std::env::var_os("DTML_FUZZ_VERBOSE").is_some() {
            let mut classes: Vec<_> = self.errors.iter().collect();
            classes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            eprintln!("  {} distinct error messages:", classes.len());
            for (class, n) in classes.iter().take(60) {
                eprintln!("  {n:>8}  {class}");
            }
        }
        assert!(
            self.panics.is_empty(),
            "{what}: {} inputs panicked (kept for replay):\n{}",
            self.panics.len(),
            self.panics.join("\n")
        );
    }
}

fn findings_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-findings")
}

/// 1 to 4 mutations, generic or targeted.
fn mutate(rng: &mut ChaCha8Rng, b: &mut Vec<u8>, targeted: impl Fn(&mut ChaCha8Rng, &mut Vec<u8>)) {
    for _ in 0..rng.random_range(1..=4) {
        if rng.random_bool(0.5) {
            targeted(rng, b);
        } else {
            mutate_bytes(rng, b);
        }
    }
}

#[test]
fn fuzz_nifti() {
    let iters = iterations();
    let mut rng = ChaCha8Rng::seed_from_u64(seed(1));
    let mut h = Harness::new();
    let seeds: Vec<Vec<u8>> = seed_volumes()
        .iter()
        .map(|v| nii_bytes(h.dir.path(), v))
        .collect();
    let target = |rng: &mut ChaCha8Rng, b: &mut Vec<u8>| mutate_nifti_field(rng, b.as_mut_slice());
    for i in 0..iters {
        let base = &seeds[rng.random_range(0..seeds.len())];
        let mut b = base.clone();
        match i % 4 {
            // .nii
            0 => {
                mutate(&mut rng, &mut b, target);
                h.check("nii", &[("case.nii", &b)], "case.nii");
            }
            // .nii.gz: mutate the content, or the compressed stream.
            1 => {
                let gz = if rng.random_bool(0.7) {
                    mutate(&mut rng, &mut b, target);
                    gzip(&b)
                } else {
                    let mut gz = gzip(&b);
                    mutate(&mut rng, &mut gz, mutate_bytes);
                    gz
                };
                h.check("nii.gz", &[("case.nii.gz", &gz)], "case.nii.gz");
            }
            // .hdr/.img pair, read by either name.
            _ => {
                let mut hdr = b[..348].to_vec();
                hdr[344..348].copy_from_slice(b"ni1\0");
                hdr[108..112].copy_from_slice(&0f32.to_le_bytes());
                let mut img = b[352..].to_vec();
                if rng.random_bool(0.7) {
                    mutate(&mut rng, &mut hdr, target);
                } else {
                    mutate(&mut rng, &mut img, mutate_bytes);
                }
                let main = if i % 4 == 2 { "case.hdr" } else { "case.img" };
                h.check("hdr-img", &[("case.hdr", &hdr), ("case.img", &img)], main);
            }
        }
    }
    h.finish("NIfTI (.nii, .nii.gz, .hdr/.img)");
}

#[test]
fn fuzz_nrrd() {
    let iters = iterations();
    let mut rng = ChaCha8Rng::seed_from_u64(seed(2));
    let mut h = Harness::new();
    let seeds = nrrd_seeds();
    // The seeds are valid.
    for (k, s) in seeds.iter().enumerate() {
        let p = h.dir.path().join(format!("seed{k}.nrrd"));
        std::fs::write(&p, s).unwrap();
        read_volume(&p).unwrap_or_else(|e| panic!("seed {k}: {e}"));
    }
    for i in 0..iters {
        let mut b = seeds[rng.random_range(0..seeds.len())].clone();
        if i % 5 == 4 {
            // Detached: the header names a data file beside it.
            let end = b.windows(2).position(|w| w == b"\n\n").unwrap() + 1;
            let mut data = b.split_off(end);
            b.extend_from_slice(b"data file: case.raw\n");
            if rng.random_bool(0.5) {
                mutate(&mut rng, &mut b, mutate_nrrd_header);
            } else {
                mutate(&mut rng, &mut data, mutate_bytes);
            }
            h.check(
                "nhdr",
                &[("case.nhdr", &b), ("case.raw", &data)],
                "case.nhdr",
            );
        } else {
            mutate(&mut rng, &mut b, mutate_nrrd_header);
            h.check("nrrd", &[("case.nrrd", &b)], "case.nrrd");
        }
    }
    h.finish("NRRD (.nrrd, .nhdr)");
}

/// The gzip helper in this file round-trips (sanity for the harness).
#[test]
fn fuzz_helpers_round_trip() {
    assert_eq!(gunzip(&gzip(b"abc")), b"abc");
}
