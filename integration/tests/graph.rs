//! The topology picture of the voting-app stack (examples/voting-app.toml): `netd up -d
//! --graph FILE` and `netctl graph -o FILE` write SVG that parses as XML (roxmltree) and
//! names every network (and subnet), sandbox and address the daemon lists; `--format
//! dot` is Graphviz text; a bad format is refused in one line. Then headless Chromium
//! renders the SVG to PNG, which must not be blank (many colours, not one).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use integration::harness::{bin, run, Host};
use integration::skip::{no_root, skip};
use serde_json::Value;

/// Every text node of the SVG, joined (Graphviz writes one `<text>` per label line).
fn svg_text(path: &Path) -> String {
    let svg = std::fs::read_to_string(path).expect("read svg");
    // Graphviz writes SVG 1.1's DOCTYPE.
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(&svg, opts).expect("the SVG parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The stack's networks (with subnets), sandboxes and addresses, as the API lists them.
fn expected(h: &Host) -> BTreeSet<String> {
    let c = h.client();
    let mine = |v: &Value| v["labels"]["netd.stack"] == "voting-app";
    let mut want = BTreeSet::new();
    for n in c
        .get("/v1/networks")
        .expect("networks")
        .as_array()
        .into_iter()
        .flatten()
    {
        if mine(n) {
            want.insert(n["name"].as_str().expect("name").to_string());
            for s in n["subnets"].as_array().into_iter().flatten() {
                want.insert(s["subnet"].as_str().expect("subnet").to_string());
            }
        }
    }
    for s in c
        .get("/v1/sandboxes")
        .expect("sandboxes")
        .as_array()
        .into_iter()
        .flatten()
    {
        if mine(s) {
            want.insert(s["name"].as_str().expect("name").to_string());
            for e in s["endpoints"].as_array().into_iter().flatten() {
                let ip = e["ipv4"].as_str().expect("ipv4");
                want.insert(ip.split('/').next().unwrap_or(ip).to_string());
            }
        }
    }
    want
}

fn check_names(path: &Path, want: &BTreeSet<String>) {
    let text = svg_text(path);
    let missing: Vec<&String> = want.iter().filter(|w| !text.contains(w.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} lacks {missing:?}; its text:\n{text}",
        path.display()
    );
}

/// Headless Chromium's screenshot of `svg`; `None` when no Chromium is installed.
fn screenshot(svg: &Path, png: &Path) -> Option<bool> {
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })?;
    let profile = png.with_extension("profile");
    let o = run(Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1600,1200")
        .arg(format!("file://{}", svg.display())));
    Some(o.ok() && png.exists())
}

#[test]
fn voting_app_picture_names_every_network_sandbox_and_address() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/voting-app.toml");
    let up_svg = h.base.join("up.svg");
    // `up -d` leaves responders running in the sandboxes: `down` stops them, also when
    // an assertion fails.
    let _down = Down(&h);
    let o = run(Command::new("nsenter")
        .arg(format!("--net={}", h.netns().display()))
        .arg(bin("netd"))
        .arg("up")
        .arg(&example)
        .arg("-d")
        .arg("--graph")
        .arg(&up_svg)
        .args(h.dir_args()));
    assert!(o.ok(), "netd up -d --graph failed:\n{}\n{}", o.stdout, o.stderr);
    let want = expected(&h);
    assert!(want.len() >= 12, "the stack is up: {want:?}");
    check_names(&up_svg, &want);

    let svg = h.base.join("all.svg");
    h.ctl(&["graph", "-o", svg.to_str().expect("path")]);
    check_names(&svg, &want);
    let text = svg_text(&svg);
    assert!(text.contains("VIP "), "the vote service's VIP is drawn: {text}");
    assert!(
        text.contains("publish 0.0.0.0:5001->80/tcp"),
        "result's published port: {text}"
    );

    let dot = h.ctl(&["graph", "--format", "dot"]);
    assert!(dot.starts_with("digraph netd {"), "{dot}");
    let bad = h.netctl(&["graph", "--format", "png"]);
    assert!(
        !bad.ok() && bad.stderr.trim().lines().count() == 1,
        "{}",
        bad.stderr
    );

    let png = h.base.join("all.png");
    match screenshot(&svg, &png) {
        None => {
            skip("graph", "no chromium (scripts/install-deps.sh installs it)");
        }
        Some(ok) => {
            assert!(ok, "chromium could not render {}", svg.display());
            let colours = distinct_colours(&png);
            println!(
                "graph: {} rendered to {} ({colours} distinct colours)",
                svg.display(),
                png.display()
            );
            assert!(colours > 4, "the rendered picture is blank ({colours} colours)");
            // To look at it: NETD_GRAPH_OUT=DIR keeps the SVG and PNG.
            if let Some(dir) = std::env::var_os("NETD_GRAPH_OUT") {
                let dir = Path::new(&dir);
                let _ = std::fs::copy(&svg, dir.join("voting-app.svg"));
                let _ = std::fs::copy(&png, dir.join("voting-app.png"));
            }
        }
    }
}

struct Down<'a>(&'a Host);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let o = run(Command::new("nsenter")
            .arg(format!("--net={}", self.0.netns().display()))
            .arg(bin("netd"))
            .args(["down", "-p", "voting-app"])
            .args(self.0.dir_args()));
        if !o.ok() {
            eprintln!("netd down: {}", o.stderr);
        }
    }
}

/// Distinct RGB colours of a PNG (every 4th pixel of every 4th row).
fn distinct_colours(png: &Path) -> usize {
    let f = std::fs::File::open(png).expect("open png");
    let mut r = png::Decoder::new(std::io::BufReader::new(f))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).expect("a frame");
    let bpp = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let mut seen = BTreeSet::new();
    for y in (0..info.height as usize).step_by(4) {
        let row = &buf[y * info.line_size..(y + 1) * info.line_size];
        for px in row.chunks(bpp).step_by(4) {
            seen.insert([px[0], px[1], px[2]]);
        }
    }
    seen.len()
}
