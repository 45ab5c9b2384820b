//! The web page in a real browser: headless Chromium (Debian's `chromium`) loads the page from a server
//! started here, a photo is picked through the page's file input (DevTools protocol), and the top-1 the
//! page renders, its five bars and its Grad-CAM overlay are read back from the DOM; a screenshot is
//! saved. Ignored by `cargo test` (it needs Chromium): `scripts/test-browser` installs nothing and runs
//! it, after `scripts/install-browser`.

mod common;

use common::{asset_image, lite0_pth, root, Server};
use serde_json::Value;
use std::process::Command;

#[test]
#[ignore = "needs Chromium: run scripts/test-browser"]
fn the_page_classifies_and_explains_an_uploaded_photo() {
    let weights = lite0_pth();
    let server = Server::start(&["--weights", weights.to_str().unwrap()]);
    let screenshot = root().join("target/page.png");
    let python = root().join("assets/python");
    assert!(
        python.join("websocket").exists(),
        "websocket-client missing: run scripts/fetch-assets"
    );
    for (photo, classes) in [("coffee", vec![967]), ("chelsea", vec![281, 282, 285])] {
        let o = Command::new("python3")
            .arg(root().join("tools/page_check.py"))
            .arg(format!("{}/", server.url))
            .arg(asset_image(photo))
            .arg(&screenshot)
            .env("PYTHONPATH", &python)
            .output()
            .expect("python3 runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let page: Value = serde_json::from_slice(&o.stdout).expect("JSON");
        assert_eq!(page["state"], "done", "{page}");
        let top1 = page["top1_class"].as_u64().unwrap();
        assert!(classes.contains(&top1), "{photo}: the page shows {page}");
        assert_eq!(page["bars"], 5, "{page}");
        assert_eq!(page["overlay_loaded"], true, "{page}");
        assert!(page["model"].as_str().unwrap().starts_with("lite0"));
        assert!(image::image_dimensions(&screenshot).is_ok());
    }
}
