"""The audit end to end on Ray: sources, the watermark shortcut found by SpRAy, bad files, resume, exact maps."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest

from gradcam_core import explain
from gradcam_core.audit_report import IMAGES, analyse_audit, open_audit, read_images
from gradcam_core.audit_run import AuditSettings, build_model, run_audit
from gradcam_core.audit_source import read_source
from gradcam_core.errors import AuditError
from gradcam_core.heat import Region

from .audit_data import watermark_model_factory, write_dataset

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    root = tmp_path_factory.mktemp("watermark") / "data"
    return root, write_dataset(root)


def _settings(**changes: object) -> AuditSettings:
    values = {"target": "true", "batch_size": 6, "regions": (Region("tag", 0.0, 0.0, 0.2, 0.2),), **changes}
    return AuditSettings(model=watermark_model_factory(), **values)


@pytest.fixture(scope="module")
def full_audit(local_ray, dataset, tmp_path_factory):
    root, _ = dataset
    out = tmp_path_factory.mktemp("audit") / "out"
    run = run_audit(read_source(root), out, _settings())
    return run, analyse_audit(out)


def test_image_folder_labels(dataset) -> None:
    root, kinds = dataset
    source = read_source(root)
    assert len(source.rows) == 24 and source.description.startswith("ImageFolder")
    labels = {Path(row.path): row.label for row in source.rows}
    assert {labels[p] for p in kinds["watermarked"] + kinds["clean_horse"]} == {"horse"}
    assert {labels[p] for p in kinds["control"]} == {"control"}


def test_the_watermark_shortcut_is_found_and_the_clean_control_is_not_flagged(full_audit, dataset) -> None:
    run, audit = full_audit
    _, kinds = dataset
    assert (run.explained, run.failed, run.skipped) == (24, 0, 0)
    assert audit.images["correct"].all()
    position = {Path(p): i for i, p in enumerate(audit.images["path"])}
    marked = {position[p] for p in kinds["watermarked"]}
    flagged = audit.flagged()
    assert len(flagged) == 1
    shortcut = flagged[0]
    assert shortcut.target == "horse" and set(shortcut.members) == marked
    assert "corner:top_left" in shortcut.flags and shortcut.corner_share > 0.5
    hot = np.unravel_index(np.argmax(shortcut.mean_map), shortcut.mean_map.shape)
    assert hot[0] < 4 and hot[1] < 4  # the watermark's corner (10 of 64 pixels)
    assert not any(c.flags for c in audit.clusters if c.target == "control")
    clean = {position[p] for p in kinds["clean_horse"]}
    assert any(set(c.members) == clean and not c.flags for c in audit.clusters if c.target == "horse")
    assert audit.images.loc[sorted(marked), "region_tag"].min() > 0.5
    assert audit.images.loc[sorted(marked), "flagged"].all() and not audit.images.loc[sorted(clean), "flagged"].any()
    reopened = open_audit(audit.folder)
    assert [(c.target, c.index, c.members, c.flags) for c in reopened.clusters] == [
        (c.target, c.index, c.members, c.flags) for c in audit.clusters
    ]
    assert reopened.thumbnail(0).size == (64, 64)
    assert set(reopened.groups["value"]) == {"horse", "control"}


def test_each_map_equals_explain(full_audit, dataset) -> None:
    _, audit = full_audit
    _, kinds = dataset
    loaded = build_model(watermark_model_factory())
    rows = audit.images.set_index("path")
    for path in kinds["watermarked"][:2] + kinds["control"][:2]:
        row = rows.loc[str(path)]
        expected = explain(str(path), loaded, target=row["target"])
        np.testing.assert_allclose(row["map"], expected.raw_map, rtol=1e-5, atol=1e-5)
        assert row["prediction"] == expected.predictions[0].label
        assert row["probability"] == pytest.approx(expected.predictions[0].probability, abs=1e-5)


def test_manifest_with_groups_and_bad_files(local_ray, dataset, tmp_path: Path) -> None:
    root, kinds = dataset
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    lines = ["path,label,site"]
    horses = kinds["watermarked"][:2] + kinds["clean_horse"][:2]
    lines += [f"{p},horse,{'A' if i % 2 else 'B'}" for i, p in enumerate(horses)]
    lines += [f"{kinds['control'][0]},control,A", "broken.png,horse,B", "missing.png,control,A", ",horse,A"]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    source = read_source(tmp_path / "manifest.csv")
    assert source.group_columns == ("site",) and len(source.rows) == 7 and len(source.bad) == 1
    out = tmp_path / "out"
    run = run_audit(source, out, _settings(target="predicted"))
    assert (run.explained, run.failed) == (5, 3)
    audit = analyse_audit(out)
    reasons = dict(zip(audit.failed["path"].map(lambda p: Path(p).name), audit.failed["error"]))
    assert "corrupt" in reasons["broken.png"] and "missing.png" in reasons
    assert reasons["manifest.csv:9"] == "The manifest row has no image path."
    assert set(audit.images["site"]) == {"A", "B"}
    sites = audit.groups[audit.groups["column"] == "site"].set_index("value")
    assert sites.loc["A", "images"] + sites.loc["B", "images"] == 5 and sites["accuracy"].eq(1.0).all()
    assert (out / "groups.csv").read_text().startswith('"column","value"')


def test_resume_after_an_interruption_explains_nothing_twice(local_ray, dataset, full_audit, tmp_path: Path) -> None:
    root, _ = dataset
    out = tmp_path / "out"

    def stop(done: int, total: int, rate: float) -> None:
        if done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_audit(read_source(root), out, _settings(), progress=stop)
    first = len(read_images(out))
    assert 6 <= first < 24
    second = run_audit(read_source(root), out, _settings())
    assert second.explained == 24 - first and second.skipped == first
    parts = sorted((out / IMAGES).glob("part-*.parquet"))
    parts[0].unlink()
    third = run_audit(read_source(root), out, _settings())
    assert third.explained == 6 and third.skipped == 18  # only the deleted part's images again
    final = read_images(out).set_index("path").sort_index()
    reference = full_audit[1].images.set_index("path").sort_index()
    assert list(final.index) == list(reference.index) and final.index.is_unique
    assert (final["sha256"] == reference["sha256"]).all() and (final["prediction"] == reference["prediction"]).all()
    for path in final.index:
        np.testing.assert_allclose(final.loc[path, "map"], reference.loc[path, "map"], rtol=1e-5, atol=1e-6)


def test_other_settings_in_the_same_folder_are_refused(local_ray, dataset, full_audit) -> None:
    _, audit = full_audit
    with pytest.raises(AuditError, match="other settings"):
        run_audit(read_source(dataset[0]), audit.folder, _settings(target="predicted"))


def test_the_command_line_audits_and_continues(local_ray, dataset, tmp_path: Path, capsys) -> None:
    from gradcam_core.cli import main

    out = tmp_path / "out"
    sources = [str(dataset[0]), "--out", str(out), "--model", "no_such_model"]
    assert main(["audit", *sources]) == 2
    assert "Unknown model" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def built_in_audit(local_ray, dataset, tmp_path_factory) -> tuple[list[str], str, str]:
    """``gradcam audit`` with the built-in model on three pictures filed as ``tabby`` and one bad file, run from a
    relative path: its arguments, what it printed and its error output."""
    from gradcam_core.cli import main

    root, kinds = dataset
    base = tmp_path_factory.mktemp("built-in")
    folder = base / "few"
    (folder / "tabby").mkdir(parents=True)
    for path in kinds["control"][:3]:
        (folder / "tabby" / path.name).write_bytes(path.read_bytes())
    (folder / "tabby" / "bad.png").write_bytes(b"not an image")
    args = ["audit", "few", "--out", str(base / "out"), "--target", "true", "--region", "tag=0,0,0.2,0.2"]
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as out:
        patch.chdir(base)
        with contextlib.redirect_stderr(io.StringIO()) as err:
            assert main(args) == 1  # one bad file
    return args, out.getvalue(), err.getvalue()


def test_the_command_line_with_the_built_in_model(built_in_audit, capsys) -> None:
    from gradcam_core.cli import main

    args, printed, errors = built_in_audit
    assert "3 images explained, 0 already done, 1 bad files" in printed and "bad.png" in errors
    out = Path(args[3])
    audit = open_audit(out)
    assert audit.settings["model"] == "efficientnet_lite0" and set(audit.images["target"]) == {"tabby"}
    assert audit.images["map"].iloc[0].shape == (7, 7) and "region_tag" in audit.images
    assert all(Path(path).is_absolute() for path in audit.images["path"])  # readable from any working folder
    args = [*args[:1], str(out.parent / "few"), *args[2:]]
    assert main(args) == 1
    assert "0 images explained, 4 already done" in capsys.readouterr().out


def test_an_audited_file_is_read_again_only_as_audited(full_audit, tmp_path: Path) -> None:
    """``Audit.image_file`` gives the audited bytes, and one sentence without the path once the file changed or left."""
    _, audit = full_audit
    original = Path(audit.images["path"].iat[0])
    assert audit.image_file(0, 2**20) == original.read_bytes()
    copy = tmp_path / "secret-folder" / original.name
    copy.parent.mkdir()
    copy.write_bytes(original.read_bytes())
    moved = dataclasses.replace(audit, images=audit.images.copy())
    moved.images.at[0, "path"] = str(copy)
    assert moved.image_file(0, 2**20) == copy.read_bytes()
    with pytest.raises(AuditError, match="larger|more than"):
        moved.image_file(0, 16)
    copy.write_bytes(copy.read_bytes() + b"\0")
    with pytest.raises(AuditError, match=f"The audited image {original.name} has changed since the audit"):
        moved.image_file(0, 2**20)
    copy.unlink()
    with pytest.raises(AuditError, match="does not exist") as missing:
        moved.image_file(0, 2**20)
    assert "secret-folder" not in str(missing.value)


def test_the_dashboard_audit_tab_shows_the_flagged_strategy(full_audit, monkeypatch) -> None:
    """The Audit tab opens the folder by name from the server's audits folder and shows the shortcut flag."""
    from streamlit.testing.v1 import AppTest

    from dashboard.tabs import audit as audit_tab

    from .page_text import shown

    run, audit = full_audit
    monkeypatch.setattr(audit_tab, "AUDITS", audit.folder.parent)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=180)
    at.session_state["view"] = "Audit"
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="audit-folder").options == [audit.folder.name]
    assert at.metric[0].value == "24"
    at.selectbox(key="audit-class").set_value("horse").run()
    warnings = [w.value for w in at.warning]
    assert any("top left corner" in w for w in warnings)
    at.selectbox(key="audit-class").set_value("control").run()
    assert not any("Possible shortcut" in w.value for w in at.warning)
    assert "24 of 24 images" in " ".join(c.value for c in at.caption)
    # The gallery narrowed to the flagged horse cluster, sorted by heat in a corner: the watermarked images.
    [flagged] = [c for c in audit.clusters if c.flags]
    at.selectbox(key="audit-gallery-class").set_value("horse").run()
    at.selectbox(key="audit-gallery-cluster-horse").set_value(flagged.index).run()
    assert f"{flagged.size} of 24 images" in " ".join(c.value for c in at.caption)
    at.selectbox(key="audit-sort").set_value("Most heat in a corner first").run()
    shares = audit.images.loc[list(flagged.members), "corner_share"].sort_values(ascending=False)
    first = Path(audit.images.loc[shares.index[0], "path"]).name
    names = [shown(c.value).split(" · ")[0] for c in at.caption if shown(c.value).split(" · ")[0].endswith(".png")]
    assert len(names) == flagged.size and names[0] == first
    assert set(names) == {Path(audit.images.loc[m, "path"]).name for m in flagged.members}


def test_one_click_opens_an_audited_image_in_the_explanation_tab(built_in_audit, monkeypatch) -> None:
    """"Explain" under an audited image opens it in the Explanation tab with the audit's model, method, layer and
    class; "Back to the samples" returns to the cat."""
    from streamlit.testing.v1 import AppTest

    from dashboard.tabs import audit as audit_tab

    from .page_text import shown

    out = Path(built_in_audit[0][3])
    audit = open_audit(out)
    monkeypatch.setattr(audit_tab, "AUDITS", out.parent)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=180)
    at.session_state["view"] = "Audit"
    at.run()
    at.selectbox(key="audit-folder").set_value(out.name).run()
    at.button(key="audit-explain-1").click().run()
    assert not at.exception and not at.error
    assert at.session_state["view"] == "Explanation"
    name = Path(audit.images["path"].iat[1]).name
    assert f"Showing {name}, opened from the Audit tab." in [shown(c.value) for c in at.caption]
    assert at.selectbox(key="model").value == "efficientnet_lite0"
    assert at.selectbox(key="method").value == audit.settings["method"]
    assert at.selectbox(key="layer-efficientnet_lite0").value == audit.settings["layer"]
    class_menu = next(box for box in at.selectbox if box.key.startswith("class-"))
    tabby = audit.settings["categories"].index("tabby")
    if class_menu.value != tabby:  # not among the top five: picked from every class
        assert next(box for box in at.selectbox if box.key.startswith("any-class-")).value == tabby
    assert "tabby" in " ".join(shown(m.value) for m in at.markdown)
    at.button(key="drop-audited").click().run()
    assert not at.exception and not any("opened from the Audit tab" in c.value for c in at.caption)


def test_the_audit_page_in_a_browser(built_in_audit, monkeypatch) -> None:
    """In Chromium: the Audit tab lists the audit, and "Explain" under an image opens its explanation."""
    from tests.browser_support import ROOT, chromium, dashboard_server, screenshot

    out = Path(built_in_audit[0][3])
    monkeypatch.setenv("GRADCAM_AUDITS", str(out.parent))
    with dashboard_server() as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        page.goto(url)
        page.get_by_role("tab", name="Audit").click()
        page.get_by_text("Strategies per class (SpRAy)").wait_for()
        page.get_by_text("3 of 3 images").wait_for()
        page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
        screenshot(page, ROOT / "docs" / "screenshots" / "audit.png")
        page.get_by_role("button", name="Explain").nth(1).click()
        name = Path(open_audit(out).images["path"].iat[1]).name
        page.get_by_text(f"Showing {name}, opened from the Audit tab.").wait_for()
        page.get_by_text("Grad-CAM heatmap", exact=True).wait_for()
        assert page.get_by_role("tab", name="Explanation").get_attribute("aria-selected") == "true"
        assert "tabby" in page.locator('[data-testid="stMain"]').inner_text()
        page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
        screenshot(page, ROOT / "docs" / "screenshots" / "audit-explained.png")
