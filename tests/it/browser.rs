//! `report.html` in a real browser: headless Chromium lays the page out at 1280 and 800 px and a
//! probe script (added to a copy of the page, never to the report) reads back what a reader sees.
//! Set `ORCHESTRA_SCREENSHOT_DIR` to keep screenshots (`docs/report.md` shows `docs/report.png`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// Chromium: `ORCHESTRA_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("ORCHESTRA_CHROMIUM") {
        return p.into();
    }
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success());
        if let Some(o) = found {
            return PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        }
    }
    panic!(
        "no Chromium for the report's browser test: run `scripts/test` (it installs Debian's \
         `chromium`) or set ORCHESTRA_CHROMIUM"
    );
}

/// Chromium headless at `width` px, on a closed network (no background requests), with a new
/// profile in `profile`.
fn headless(width: u32, height: u32, profile: &Path) -> Command {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--window-size={width},{height}"));
    cmd
}

/// Measures the laid-out page: overflow, sections, alignment, requests.
const PROBE: &str = r##"<script>
(() => {
  const w = document.documentElement.clientWidth;
  const outside = e => !(e.parentElement && e.parentElement.closest(".tbl"));
  const box = id => { const e = document.getElementById(id); return e ? e.getBoundingClientRect() : null; };
  const probe = {
    width: w,
    scroll_width: document.documentElement.scrollWidth,
    sticking_out: [...document.querySelectorAll("body *")].filter(e => outside(e) && e.getBoundingClientRect().right > w + 0.5).map(e => e.tagName + "." + e.className),
    sections: ["overview", "attention", "trends", "tables"].map(id => { const b = box(id); return b ? [id, b.top, b.height] : [id, -1, 0]; }),
    numbers: document.querySelectorAll("td.num").length,
    numbers_not_right: [...document.querySelectorAll("td.num, th.num")].filter(e => getComputedStyle(e).textAlign !== "right").length,
    attention: [...document.querySelectorAll("#attention h3")].map(e => e.textContent),
    trend_rows: document.querySelectorAll(".trends .wf").length,
    trends_heading: [...document.querySelectorAll("#trends h3")].map(e => e.textContent),
    regressed_badges: [...document.querySelectorAll(".trends .badge")].length,
    cut_notes: [...document.querySelectorAll("p.note")].map(e => e.textContent).filter(t => / of .* shown/.test(t)),
    links: document.querySelectorAll("[src], link[href], a[href^=http]").length,
    scripts: document.scripts.length,
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(probe);
  document.body.appendChild(pre);
})();
</script>"##;

fn probe(page: &Path, width: u32, work: &Path) -> Value {
    let copy = work.join(format!("probe-{width}.html"));
    let html = std::fs::read_to_string(page).unwrap();
    std::fs::write(&copy, html.replace("</body>", &format!("{PROBE}</body>"))).unwrap();
    let out = headless(width, 900, &work.join(format!("profile-{width}")))
        .arg("--dump-dom")
        .arg(format!("file://{}", copy.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find(r#"<pre id="probe">"#).unwrap_or_else(|| {
        panic!(
            "no probe output at {width} px: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let json = &dom[start + r#"<pre id="probe">"#.len()..];
    let json = &json[..json.find("</pre>").unwrap()];
    serde_json::from_str(&json.replace("&quot;", "\"").replace("&amp;", "&")).unwrap()
}

#[test]
fn report_html_fits_1280_and_800_px_in_chromium_and_leads_with_what_needs_attention() {
    let (_sim, dir) = exported_with_steps(6, 500);
    assert_ok(&run(&["report", "--data", dir.path().to_str().unwrap()]));
    let page = dir.path().join("_reports/report.html");
    let work = tempfile::tempdir().unwrap();
    for width in [1280, 800] {
        let p = probe(&page, width, work.path());
        let context = format!("{width} px: {p}");
        assert_eq!(p["width"], width, "{context}");
        assert!(
            p["scroll_width"].as_u64().unwrap() <= u64::from(width),
            "the page scrolls sideways at {context}"
        );
        assert_eq!(
            p["sticking_out"],
            Value::Array(vec![]),
            "only tables may be wider than the page, inside their own box: {context}"
        );
        // Sections in reading order, each laid out.
        let tops: Vec<f64> = p["sections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert!(
                    s[2].as_f64().unwrap() > 50.0,
                    "section {s} is empty: {context}"
                );
                s[1].as_f64().unwrap()
            })
            .collect();
        assert!(tops.windows(2).all(|w| w[0] < w[1]), "{context}");
        assert!(p["numbers"].as_u64().unwrap() > 100, "{context}");
        assert_eq!(
            p["numbers_not_right"], 0,
            "numbers right-aligned: {context}"
        );
        let attention: Vec<&str> = p["attention"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(
            attention,
            [
                "Regressed: 1 of 6 workflows compared",
                "Highest error rates",
                "Slowest workflows (p95)",
                "Largest error groups",
                "Failing nodes",
                "Slowest nodes (p95)"
            ],
            "{context}"
        );
        assert_eq!(p["trend_rows"], 6, "{context}");
        assert_eq!(p["regressed_badges"], 1, "{context}");
        assert!(
            p["trends_heading"]
                .as_array()
                .unwrap()
                .contains(&Value::from("Per workflow: 6 of 6 shown")),
            "{context}"
        );
        assert!(
            p["cut_notes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().starts_with("20 of ")),
            "a cut table says so: {context}"
        );
        assert_eq!(p["links"], 0, "self-contained: {context}");
        assert_eq!(p["scripts"], 1, "only the probe's script: {context}");
    }
    if let Some(shots) = std::env::var_os("ORCHESTRA_SCREENSHOT_DIR") {
        let shot = PathBuf::from(shots).join("report.png");
        let out = headless(1280, 2600, &work.path().join("profile-shot"))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("file://{}", page.display()))
            .output()
            .unwrap();
        assert!(shot.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
