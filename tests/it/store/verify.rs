//! `verify` of a dataset on object storage: it agrees after an export, changes no object (it
//! takes no lock), names the runs of a partition object deleted behind its back, and agrees
//! again after `export --full`.

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use orchestra_export::simulate::SimConfig;

use super::*;

fn s3_verify(moto: &Moto, sim: &Sim, out: &str, extra: &[&str]) -> Output {
    let url = sim.url();
    let mut args = vec!["verify", "--base-url", url.as_str(), "--out", out];
    args.extend_from_slice(extra);
    let out = command(moto, &args).output().unwrap();
    assert_no_secret(&out);
    out
}

#[test]
fn verify_reads_a_dataset_on_s3_without_changing_it() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 300,
        ..SimConfig::default()
    });
    let out_url = "s3://lake/v";
    assert_ok(&s3_export(&moto, &sim, out_url, &["--all-workflows"]));
    let bucket = moto.bucket("lake");
    let before = bucket.objects("v");

    let out = s3_verify(&moto, &sim, out_url, &["--all-workflows"]);
    assert_ok(&out);
    assert!(
        stdout(&out).starts_with("verify `s3://lake/v`: 2 workflows, 2 agree with the API"),
        "{}",
        stdout(&out)
    );
    assert_eq!(bucket.objects("v"), before, "verify changed objects");

    // A partition object deleted behind the dataset's back: its runs are missing.
    let partition = before
        .keys()
        .find(|k| k.starts_with("v/runs/date="))
        .unwrap()
        .clone();
    let local = bucket.download("v");
    let lost = column_values(
        &local.path().join(partition.strip_prefix("v/").unwrap()),
        "run_id",
    );
    bucket
        .runtime
        .block_on(bucket.store.delete(&ObjectPath::from(partition.as_str())))
        .unwrap();
    let out = s3_verify(&moto, &sim, out_url, &["--all-workflows", "--json"]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["total"]["missing"], lost.len(), "{doc}");

    assert_ok(&s3_export(
        &moto,
        &sim,
        out_url,
        &["--all-workflows", "--full"],
    ));
    assert_ok(&s3_verify(&moto, &sim, out_url, &["--all-workflows"]));
}
