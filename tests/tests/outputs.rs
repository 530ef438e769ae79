//! Real scans and users' files (issue 20), tried as a user would with the
//! release binary: scans of a real scan's size through every command, an
//! output policy that never writes onto anything dtml does not own, locks
//! against a second writer, run folders read as strictly as flags, and the
//! small slips (FIFO configs, debris, hidden files, long names).
//!
//! The output policy in one line each: an output folder is new, empty or
//! dtml's own output of the same kind, and never on or inside an input;
//! a command holds the folder's lock while it runs.

mod common;
use common::{dtml, dtml_bin, dtml_err, dtml_ok, fake_run, s, tiny_prepared};
use dtml_volume::{Geometry, Volume, VoxelData, Xyz, write_nifti};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `dtml train` of one iteration at toy size.
fn tiny_train(prepared: &Path, run: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "train",
        "--data",
        s(prepared),
        "--out",
        s(run),
        "--patch",
        "32,32,16",
        "--width",
        "2",
    ];
    if !extra.contains(&"--iterations") {
        args.extend(["--iterations", "1"]);
    }
    args.extend_from_slice(extra);
    dtml_ok(&args)
}

/// The window every prediction here uses (the fake runs' patch).
const WINDOW: [&str; 4] = ["--patch", "16,16,16", "--stride", "16,16,16"];

fn predict_args<'a>(model: &'a Path, input: &'a Path, out: &'a Path) -> Vec<&'a str> {
    let mut args = vec![
        "predict",
        "--model",
        s(model),
        "--input",
        s(input),
        "--out",
        s(out),
    ];
    args.extend(WINDOW);
    args
}

/// `dtml prepare --data DATA --out OUT` with `extra` flags.
fn prepare_args<'a>(data: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["prepare", "--data", s(data), "--out", s(out)];
    args.extend_from_slice(extra);
    args
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

// ---- 1. Real scans of several MiB through every command --------------------

#[test]
fn real_scans_of_several_mib_go_through_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // int16 MR-like volumes with noise and texture, as a real T1 is:
    // about 13 MiB of gzip each, where the regression refused anything
    // over 1 MiB.
    dtml_ok(&[
        "generate",
        "--out",
        s(&data),
        "--shape",
        "256,256,160",
        "--train-cases",
        "2",
        "--test-cases",
        "1",
    ]);
    let scan = data.join("imagesTs/synth_002_0000.nii.gz");
    let bytes = std::fs::metadata(&scan).unwrap().len();
    assert!(bytes > 4 << 20, "a real-sized scan: {bytes} bytes");
    let info = dtml_ok(&["info", s(&scan)]);
    assert!(
        info.contains("256 x 256 x 160") && info.contains("I16"),
        "{info}"
    );

    // The same scan as a gzip NRRD (3D Slicer's format), over 1 MiB too.
    let volume = dtml_volume::read_volume(&scan).unwrap();
    let nrrd = dir.path().join("scan.nrrd");
    let mut f = File::create(&nrrd).unwrap();
    write!(
        f,
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 256 256 160\n\
         space directions: (0.95,0,0) (0,1.02,0) (0,0,1.95)\nencoding: gzip\nendian: little\n\n"
    )
    .unwrap();
    let VoxelData::I16(voxels) = &volume.data else {
        panic!("int16 scan")
    };
    let raw: Vec<u8> = voxels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    gz.finish().unwrap();
    assert!(std::fs::metadata(&nrrd).unwrap().len() > 1 << 20);
    let info = dtml_ok(&["info", s(&nrrd)]);
    assert!(info.contains("256 x 256 x 160"), "{info}");

    let prepared = dir.path().join("prepared");
    dtml_ok(&prepare_args(
        &data,
        &prepared,
        &["--labelled", "1", "--patch", "64,64,32"],
    ));
    let run = dir.path().join("run");
    fake_run(&run, Xyz::splat(16), 2);
    let large = ["--patch", "128,128,64", "--stride", "128,128,64"];
    let masks = dir.path().join("masks");
    let mut args = vec![
        "predict",
        "--model",
        s(&run),
        "--input",
        s(&nrrd),
        "--out",
        s(&masks),
    ];
    args.extend(large);
    dtml_ok(&args);
    let mask = dtml_volume::read_volume(&masks.join("scan.nii.gz")).unwrap();
    assert_eq!(mask.shape, Xyz::new(256, 256, 160));
    let evaluation = dir.path().join("evaluation");
    let mut args = vec![
        "evaluate",
        "--model",
        s(&run),
        "--data",
        s(&data),
        "--out",
        s(&evaluation),
    ];
    args.extend(large);
    dtml_ok(&args);
    assert!(evaluation.join("metrics.csv").is_file());
    // The scan itself as a mask (every non-zero voxel) and a real label.
    let label = data.join("labelsTs/synth_002.nii.gz");
    let table = dtml_ok(&["metrics", "--pred", s(&scan), "--ref", s(&label)]);
    assert!(table.contains("synth_002"), "{table}");
    let sdm = dir.path().join("sdm.nii.gz");
    dtml_ok(&["distance", "--mask", s(&scan), "--out", s(&sdm)]);
    let map = dtml_volume::read_volume(&sdm).unwrap();
    assert_eq!(map.shape, Xyz::new(256, 256, 160));
}

// ---- 2. dtml writes only what it owns ---------------------------------------

#[test]
fn prepare_never_deletes_what_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = tiny_prepared(dir.path(), &[]);
    let data = dir.path().join("data");
    let prepare = |out: &Path| -> String {
        dtml_err(&prepare_args(
            &data,
            out,
            &["--labelled", "2", "--patch", "32,32,16"],
        ))
    };
    // A folder that merely holds a cases/ subfolder, or a manifest.json.
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("cases")).unwrap();
    std::fs::write(home.join("thesis.tex"), "keep").unwrap();
    let err = prepare(&home);
    assert!(err.contains("not a dtml prepared cache"), "{err}");
    std::fs::write(home.join("manifest.json"), "{\"mine\": true}").unwrap();
    let err = prepare(&home);
    assert!(err.contains("not a dtml prepared cache"), "{err}");
    assert_eq!(
        std::fs::read_to_string(home.join("thesis.tex")).unwrap(),
        "keep"
    );
    // A real cache with a user's file beside it, or in its cases/.
    std::fs::write(prepared.join("notes.txt"), "keep").unwrap();
    let err = prepare(&prepared);
    assert!(
        err.contains("notes.txt") && err.contains("did not write"),
        "{err}"
    );
    std::fs::remove_file(prepared.join("notes.txt")).unwrap();
    std::fs::write(prepared.join("cases/mine.safetensors"), "keep").unwrap();
    let err = prepare(&prepared);
    assert!(err.contains("mine.safetensors"), "{err}");
    assert!(prepared.join("cases/mine.safetensors").is_file());
    std::fs::remove_file(prepared.join("cases/mine.safetensors")).unwrap();
    // A run folder keeps its students.
    let run = dir.path().join("run");
    tiny_train(&prepared, &run, &[]);
    let student = read(&run.join("student_a.safetensors"));
    let err = prepare(&run);
    assert!(err.contains("not a dtml prepared cache"), "{err}");
    assert_eq!(read(&run.join("student_a.safetensors")), student);
    // train does not write into a cache, nor into its own input.
    let err = dtml_err(&[
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&prepared),
        "--iterations",
        "1",
    ]);
    assert!(err.contains("is the input"), "{err}");
    let err = dtml_err(&[
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&home),
        "--iterations",
        "1",
    ]);
    assert!(err.contains("not a dtml run"), "{err}");
    // The demo's folders are claimed one by one: a user's file in
    // D/prepared/cases stops it before anything there is deleted.
    let demo = dir.path().join("demo");
    std::fs::create_dir_all(demo.join("prepared/cases")).unwrap();
    std::fs::write(demo.join("prepared/cases/mine.txt"), "keep").unwrap();
    let err = dtml_err(&["train", "--out", s(&demo), "--iterations", "1"]);
    assert!(err.contains("prepared"), "{err}");
    assert!(demo.join("prepared/cases/mine.txt").is_file());
}

#[test]
fn predictions_and_evaluations_never_land_on_their_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    dtml_ok(&[
        "generate",
        "--out",
        s(&data),
        "--shape",
        "16,16,16",
        "--train-cases",
        "2",
        "--test-cases",
        "2",
    ]);
    let run = dir.path().join("run");
    fake_run(&run, Xyz::splat(16), 2);
    let labels_ts = data.join("labelsTs");
    let labels_tr = data.join("labelsTr");
    let before: Vec<Vec<u8>> = [&labels_ts, &labels_tr]
        .iter()
        .flat_map(|d| dtml_volume::files::volume_files(d).unwrap())
        .map(|p| read(&p))
        .collect();
    let link = dir.path().join("link-to-labels");
    std::os::unix::fs::symlink(&labels_ts, &link).unwrap();
    for out in [&labels_ts, &link] {
        for overwrite in [false, true] {
            let mut args = vec![
                "evaluate",
                "--model",
                s(&run),
                "--data",
                s(&data),
                "--out",
                s(out),
            ];
            args.extend(WINDOW);
            if overwrite {
                args.push("--overwrite");
            }
            let err = dtml_err(&args);
            assert!(err.contains("lies inside the input"), "{err}");
        }
    }
    let images_ts = data.join("imagesTs");
    let link_tr = dir.path().join("link-to-train-labels");
    std::os::unix::fs::symlink(&labels_tr, &link_tr).unwrap();
    for out in [&labels_tr, &link_tr] {
        for overwrite in [false, true] {
            let mut args = predict_args(&run, &images_ts, out);
            if overwrite {
                args.push("--overwrite");
            }
            let err = dtml_err(&args);
            assert!(err.contains("not a dtml prediction folder"), "{err}");
        }
    }
    let err = dtml_err(&predict_args(&run, &images_ts, &images_ts));
    assert!(err.contains("is the input"), "{err}");
    let err = dtml_err(&predict_args(&run, &images_ts, &run.join("masks")));
    assert!(err.contains("lies inside the input"), "{err}");
    let after: Vec<Vec<u8>> = [&labels_ts, &labels_tr]
        .iter()
        .flat_map(|d| dtml_volume::files::volume_files(d).unwrap())
        .map(|p| read(&p))
        .collect();
    assert_eq!(before, after, "reference labels unchanged");
    // distance replaces only its own files, never its mask.
    let mask = labels_ts.join("synth_002.nii.gz");
    let err = dtml_err(&["distance", "--mask", s(&mask), "--out", s(&mask)]);
    assert!(err.contains("is the input"), "{err}");
    let theirs = dir.path().join("theirs.nii.gz");
    let foreign = b"a user's file that happens to end in .nii.gz".to_vec();
    std::fs::write(&theirs, &foreign).unwrap();
    let err = dtml_err(&["distance", "--mask", s(&mask), "--out", s(&theirs)]);
    assert!(err.contains("dtml did not write it"), "{err}");
    assert_eq!(read(&theirs), foreign);
    let ours = dir.path().join("ours.nii.gz");
    dtml_ok(&["distance", "--mask", s(&mask), "--out", s(&ours)]);
    dtml_ok(&[
        "distance",
        "--mask",
        s(&mask),
        "--out",
        s(&ours),
        "--signed",
    ]);
    // A failed model load leaves no empty --out behind.
    let nothing = dir.path().join("nothing");
    let err = dtml_err(&predict_args(
        &dir.path().join("missing.pth"),
        &images_ts,
        &nothing,
    ));
    assert!(err.contains("missing.pth"), "{err}");
    assert!(!nothing.exists());
}

// ---- 3. Locks ----------------------------------------------------------------

/// Holds `dir`'s dtml lock as another process would.
fn hold_lock(dir: &Path) -> File {
    std::fs::create_dir_all(dir).unwrap();
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".dtml-lock"))
        .unwrap();
    f.try_lock().unwrap();
    f
}

#[test]
fn a_second_writer_is_refused_and_a_killed_one_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = tiny_prepared(dir.path(), &[]);
    let data = dir.path().join("data");
    // prepare and predict while another process holds the folder.
    let held = hold_lock(&prepared);
    let err = dtml_err(&prepare_args(
        &data,
        &prepared,
        &["--labelled", "2", "--patch", "32,32,16"],
    ));
    assert!(err.contains("in use by another dtml process"), "{err}");
    // train reads the cache only while no one writes it.
    let err = dtml_err(&[
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&dir.path().join("r")),
        "--iterations",
        "1",
    ]);
    assert!(err.contains("in use by another dtml process"), "{err}");
    drop(held);
    let run = dir.path().join("fake");
    fake_run(&run, Xyz::splat(16), 2);
    let masks = dir.path().join("masks");
    let held = hold_lock(&masks);
    let err = dtml_err(&predict_args(&run, &data.join("imagesTs"), &masks));
    assert!(err.contains("in use"), "{err}");
    drop(held);
    dtml_ok(&predict_args(&run, &data.join("imagesTs"), &masks));

    // A running train holds its run folder: the second is refused at once
    // with the first one's pid; once it is killed, the folder is free.
    let out = dir.path().join("run");
    let mut first = Command::new(dtml_bin())
        .args([
            "train",
            "--data",
            s(&prepared),
            "--out",
            s(&out),
            "--iterations",
            "100000",
            "--patch",
            "32,32,16",
            "--width",
            "2",
        ])
        .env("DTML_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.join(".dtml-lock");
    let start = Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |t| t.trim().is_empty()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "train never locked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = dtml_err(&[
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&out),
        "--iterations",
        "1",
        "--seed",
        "8",
    ]);
    assert!(
        err.contains(&format!("pid {}", first.id())) && err.contains(s(&out)),
        "{err}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    tiny_train(&prepared, &dir.path().join("run2"), &[]);
    // The killed run's lock is stale: a new run (or a resume) proceeds.
    let out_after = dtml(&[
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&out),
        "--iterations",
        "1",
        "--patch",
        "32,32,16",
        "--width",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out_after.stderr);
    assert!(!err.contains("in use"), "{err}");
}

// ---- 4. Run folders are inputs too ---------------------------------------------

#[test]
fn run_folders_are_read_as_strictly_as_flags() {
    let dir = tempfile::tempdir().unwrap();
    let scans = dir.path().join("scans");
    std::fs::create_dir(&scans).unwrap();
    let scan = scans.join("a.nii.gz");
    write_nifti(
        &scan,
        &Volume::new(
            VoxelData::I16((0..16 * 16 * 16).map(|i| (i % 97) as i16).collect()),
            Xyz::splat(16),
            Geometry::from_spacing(Xyz::splat(1.0)),
        )
        .unwrap(),
    )
    .unwrap();
    let edit = |name: &str, change: &dyn Fn(&mut serde_json::Value)| -> PathBuf {
        let run = dir.path().join(name);
        fake_run(&run, Xyz::splat(16), 2);
        let path = run.join("run.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        change(&mut json);
        std::fs::write(&path, json.to_string()).unwrap();
        run
    };
    let other = dir.path().join("other-run");
    fake_run(&other, Xyz::splat(16), 2);
    for (name, change, why) in [
        (
            "sharp",
            Box::new(|j: &mut serde_json::Value| j["sharpness"] = (-1.0).into())
                as Box<dyn Fn(&mut serde_json::Value)>,
            "sharpness -1",
        ),
        (
            "eps",
            Box::new(|j: &mut serde_json::Value| j["network"]["bn_eps"] = (-1.0).into()),
            "bn_eps -1",
        ),
        (
            "patch",
            Box::new(|j: &mut serde_json::Value| j["patch"] = serde_json::json!([20, 16, 16])),
            "multiple of 16",
        ),
        (
            "escape",
            Box::new(|j: &mut serde_json::Value| {
                j["students"][0]["file"] = "../other-run/student_a.safetensors".into()
            }),
            "not a file name inside the run folder",
        ),
        (
            "absolute",
            Box::new(|j: &mut serde_json::Value| j["students"][0]["file"] = "/etc/passwd".into()),
            "not a file name inside the run folder",
        ),
    ] {
        let run = edit(name, &*change);
        let out = dir.path().join(format!("out-{name}"));
        let err = dtml_err(&predict_args(&run, &scan, &out));
        assert!(
            err.contains("run.json") && err.contains(why),
            "{name}: {err}"
        );
        assert!(!out.exists(), "{name}: no output folder left");
    }
    // A student file that is a symlink out of the run folder.
    let linked = edit("linked", &|_| {});
    std::fs::remove_file(linked.join("student_a.safetensors")).unwrap();
    std::os::unix::fs::symlink(
        other.join("student_a.safetensors"),
        linked.join("student_a.safetensors"),
    )
    .unwrap();
    let err = dtml_err(&predict_args(&linked, &scan, &dir.path().join("o")));
    assert!(err.contains("resolves outside the run folder"), "{err}");
    // A patch the machine cannot hold is refused before any allocation,
    // from run.json as from the flags.
    let huge = edit("huge", &|j| {
        j["patch"] = serde_json::json!([16000, 16000, 16000])
    });
    let o = dir.path().join("o");
    let mut args = predict_args(&huge, &scan, &o);
    args.truncate(7);
    let err = dtml_err(&args);
    assert!(err.contains("GiB are available"), "{err}");
}

#[test]
fn sizes_lists_and_labels_are_checked_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = tiny_prepared(dir.path(), &[]);
    let data = dir.path().join("data");
    let prepare = |extra: &[&str]| -> String {
        let out = dir.path().join("p2");
        let mut args = vec![
            "prepare",
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--labelled",
            "2",
        ];
        args.extend_from_slice(extra);
        dtml_err(&args)
    };
    // Sizes that used to exhaust memory or abort.
    for patch in ["1600,1600,1600", "65536,65536,65536"] {
        let err = prepare(&["--patch", patch]);
        assert!(err.contains("--patch"), "{patch}: {err}");
    }
    let run = dir.path().join("fake");
    fake_run(&run, Xyz::splat(16), 2);
    for command in ["predict", "evaluate"] {
        let (input_flag, input) = if command == "predict" {
            ("--input", data.join("imagesTs"))
        } else {
            ("--data", data.clone())
        };
        let err = dtml_err(&[
            command,
            "--model",
            s(&run),
            input_flag,
            s(&input),
            "--out",
            s(&dir.path().join("o")),
            "--patch",
            "1600,1600,1600",
        ]);
        assert!(err.contains("GiB are available"), "{command}: {err}");
    }
    // One case in two lists, a case listed twice, an unknown case.
    let list = dir.path().join("l.list");
    std::fs::write(&list, "synth_006\n").unwrap();
    let err = prepare(&["--test-list", s(&list), "--validation-list", s(&list)]);
    assert!(err.contains("validated on or tested on"), "{err}");
    std::fs::write(&list, "synth_006\nsynth_006\n").unwrap();
    let err = prepare(&["--validation-list", s(&list)]);
    assert!(err.contains("listed twice"), "{err}");
    std::fs::write(&list, "synth_099\n").unwrap();
    let err = prepare(&["--validation-list", s(&list)]);
    assert!(err.contains("synth_099"), "{err}");
    // Labels {0, 255} with the default foreground 1.
    let la_like = dir.path().join("la-like");
    copy_dir(&data, &la_like);
    for label in dtml_volume::files::volume_files(&la_like.join("labelsTr")).unwrap() {
        let mut v = dtml_volume::read_volume(&label).unwrap();
        let VoxelData::U8(values) = &mut v.data else {
            panic!("u8 labels")
        };
        values.iter_mut().for_each(|x| *x *= 255);
        write_nifti(&label, &v).unwrap();
    }
    let err = dtml_err(&[
        "prepare",
        "--data",
        s(&la_like),
        "--out",
        s(&dir.path().join("p3")),
        "--labelled",
        "2",
    ]);
    assert!(
        err.contains("[255.0]") && err.contains("--foreground"),
        "{err}"
    );
    // A resume on a cache prepared again with another split.
    let run = dir.path().join("run");
    tiny_train(
        &prepared,
        &run,
        &["--iterations", "2", "--checkpoint-every", "1"],
    );
    dtml_ok(&prepare_args(
        &data,
        &prepared,
        &[
            "--labelled",
            "3",
            "--patch",
            "32,32,16",
            "--margin",
            "4,4,full",
        ],
    ));
    let err = dtml_err(&[
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&run),
        "--resume",
    ]);
    assert!(err.contains("prepared again"), "{err}");
}

// ---- 5. Slips ------------------------------------------------------------------

#[test]
fn fifos_debris_hidden_files_long_names_and_slurm_slips() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = tiny_prepared(dir.path(), &[]);
    let data = dir.path().join("data");
    // A --config that never ends, or never answers, is refused at once.
    let fifo = dir.path().join("config.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for config in [fifo.as_path(), Path::new("/dev/zero")] {
        let start = Instant::now();
        let err = dtml_err(&[
            "train",
            "--data",
            s(&prepared),
            "--out",
            s(&dir.path().join("r")),
            "--config",
            s(config),
        ]);
        assert!(err.contains("not a regular file"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(30));
    }
    // A device as --input is named as what it is, not as missing.
    let fake = dir.path().join("fake");
    fake_run(&fake, Xyz::splat(16), 2);
    let err = dtml_err(&predict_args(
        &fake,
        Path::new("/dev/zero"),
        &dir.path().join("m0"),
    ));
    assert!(err.contains("not a regular file"), "{err}");
    // Debris of a killed run is removed by the next one.
    let run = dir.path().join("run");
    tiny_train(&prepared, &run, &["--checkpoint-every", "1"]);
    let debris = run.join(".dtml-999999999-abcdef.tmp");
    std::fs::create_dir(&debris).unwrap();
    std::fs::write(debris.join("network_0.safetensors"), "half").unwrap();
    let staging = dir.path().join(".prepared.preparing");
    std::fs::create_dir_all(staging.join("cases")).unwrap();
    std::fs::write(staging.join(".dtml-lock"), "999999999\n").unwrap();
    tiny_train(&prepared, &run, &["--resume", "--iterations", "1"]);
    assert!(!debris.exists(), "checkpoint debris removed");
    dtml_ok(&prepare_args(
        &data,
        &prepared,
        &[
            "--labelled",
            "2",
            "--patch",
            "32,32,16",
            "--margin",
            "4,4,full",
        ],
    ));
    assert!(!staging.exists(), "prepare staging debris removed");
    // A cache folder whose legal name leaves no room for a staging tag.
    let long_out = dir.path().join("c".repeat(250));
    dtml_ok(&prepare_args(
        &data,
        &long_out,
        &["--labelled", "2", "--patch", "32,32,16"],
    ));
    assert!(long_out.join("manifest.json").is_file());
    // Gzip NRRD data followed by stray bytes is read (as pynrrd does).
    let nrrd = dir.path().join("trailing.nrrd");
    let mut f = File::create(&nrrd).unwrap();
    write!(
        f,
        "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\nencoding: gzip\n\n"
    )
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(&mut f, flate2::Compression::fast());
    gz.write_all(&[1u8; 64]).unwrap();
    gz.finish().unwrap();
    f.write_all(b"\n\n").unwrap();
    drop(f);
    let info = dtml_ok(&["info", s(&nrrd)]);
    assert!(info.contains("4 x 4 x 4"), "{info}");
    // Hidden files beside the scans, and a legal 250-byte name.
    let scans = dir.path().join("scans");
    std::fs::create_dir(&scans).unwrap();
    let long = format!("{}.nii.gz", "s".repeat(243));
    std::fs::copy(
        data.join("imagesTs/synth_006_0000.nii.gz"),
        scans.join(&long),
    )
    .unwrap();
    std::fs::write(scans.join("._scan.nii.gz"), [0u8; 4096]).unwrap();
    std::fs::write(scans.join(".DS_Store"), [0u8; 64]).unwrap();
    let masks = dir.path().join("masks");
    dtml_ok(&predict_args(&fake, &scans, &masks));
    assert!(masks.join(&long).is_file());
    // A Slurm task id that is no number, or without the array's size.
    for (id, count) in [("abc", Some("2")), ("1", None)] {
        let mut cmd = Command::new(dtml_bin());
        cmd.args(predict_args(&fake, &scans, &dir.path().join("m2")))
            .env("SLURM_ARRAY_TASK_ID", id)
            .env_remove("SLURM_ARRAY_TASK_COUNT");
        if let Some(c) = count {
            cmd.env("SLURM_ARRAY_TASK_COUNT", c);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("SLURM_ARRAY_TASK"),
            "{err}"
        );
    }
    // 2D images are refused by prepare as by predict.
    let flat = dir.path().join("flat");
    copy_dir(&data, &flat);
    for sub in ["imagesTr", "labelsTr"] {
        let first = dtml_volume::files::volume_files(&flat.join(sub)).unwrap()[0].clone();
        let v = dtml_volume::read_volume(&first).unwrap();
        let plane = Volume::new(
            match &v.data {
                VoxelData::U8(x) => VoxelData::U8(x[..36 * 36].to_vec()),
                VoxelData::I16(x) => VoxelData::I16(x[..36 * 36].to_vec()),
                VoxelData::F32(x) => VoxelData::F32(x[..36 * 36].to_vec()),
                other => panic!("{:?}", other.dtype()),
            },
            Xyz::new(36, 36, 1),
            v.geometry.clone(),
        )
        .unwrap();
        write_nifti(&first, &plane).unwrap();
    }
    let err = dtml_err(&[
        "prepare",
        "--data",
        s(&flat),
        "--out",
        s(&dir.path().join("p-flat")),
        "--labelled",
        "2",
    ]);
    assert!(err.contains("2D"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
