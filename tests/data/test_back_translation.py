"""data.augment.back_translation: target-language text → rows synthetic source → real target."""

import json

import pytest

from tuneforge.core.config import AugmentConfig, BackTranslationConfig, DataConfig
from tuneforge.core.errors import ConfigError, DataError
from tuneforge.data.augment import acceptable_back_translation, back_translation_rows, read_texts

# What a translator answered for each French line: one good, one copy, one with other numbers, one in French.
ANSWERS = {
    "Votre commande a été expédiée hier.": "Your order was shipped yesterday.\n\nThis is a polite message.",
    "Le colis est en route.": "Le colis est en route.",
    "Votre garantie dure deux ans, soit 24 mois.": "Your warranty lasts two years, or 12 months.",
    "Merci d'avoir contacté le service client Lumeo.": "Merci d'avoir contacté notre service client Lumeo.",
}


def fake_translate(prompts: list[str]) -> list[str]:
    return [next(answer for text, answer in ANSWERS.items() if prompt.endswith(text)) for prompt in prompts]


def test_rows_pair_the_synthetic_source_with_the_real_target_and_drop_bad_translations():
    cfg = BackTranslationConfig(files=["mono.txt"], model="m", prefix="<2fr> ", require_language="en")
    texts = [(f"mono.txt:{i}", text) for i, text in enumerate(ANSWERS, start=1)]
    made, rejected = back_translation_rows(texts, fake_translate, cfg)
    assert [row for _, row in made] == [{"messages": [
        {"role": "user", "content": "<2fr> Your order was shipped yesterday."},  # the explanation cut off
        {"role": "assistant", "content": "Votre commande a été expédiée hier."}]}]
    assert made[0][0] == {"source": "mono.txt:1"}
    assert rejected == {"copied": 1, "numbers": 1, "language": 1}


def test_acceptable_back_translation_reasons():
    assert acceptable_back_translation("Bonjour à tous", "", None) == "empty"
    assert acceptable_back_translation("Un texte assez long pour juger.", "Hi", None) == "length"
    assert acceptable_back_translation("Votre colis arrive demain matin.", "Your parcel arrives tomorrow "
                                       "morning.", "en") is None


def test_augment_adds_marked_rows_from_text_and_jsonl_files(tmp_path, monkeypatch):
    from tuneforge.data.augment import augment_rows

    (tmp_path / "a.txt").write_text("Votre commande a été expédiée hier.\n\nLe colis est en route.\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "Votre garantie dure deux ans, soit 24 mois."}) + "\n")
    assert read_texts(tmp_path / "a.txt") == [(f"{tmp_path / 'a.txt'}:1", "Votre commande a été expédiée hier."),
                                             (f"{tmp_path / 'a.txt'}:3", "Le colis est en route.")]
    bt = BackTranslationConfig(files=[tmp_path / "a.txt", tmp_path / "b.jsonl"], model="unused")
    cfg = AugmentConfig(enabled=True, back_translation=bt)
    # the model is the one thing faked here (examples/translation/measure.py runs the shipped one)
    monkeypatch.setattr("tuneforge.data.augment.make_rewriter", lambda *args: fake_translate)
    rows, stats = augment_rows([], cfg, seed=0)
    assert [r["messages"][1]["content"] for r in rows] == ["Votre commande a été expédiée hier."]
    assert rows[0]["meta"]["augmented"] == "back_translation"
    assert rows[0]["meta"]["augmented_from"] == f"{tmp_path / 'a.txt'}:1"
    assert stats.details["back_translation_rejected"] == {"copied": 1, "numbers": 1}


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="files"):
        BackTranslationConfig(files=[])
    with pytest.raises(DataError, match="does not exist"):
        read_texts(tmp_path / "missing.txt")
    (tmp_path / "bad.jsonl").write_text('{"line": "x"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        read_texts(tmp_path / "bad.jsonl")
    from tuneforge.data.augment import augment_rows

    (tmp_path / "a.txt").write_text("Bonjour.\n")
    cfg = AugmentConfig(enabled=True, back_translation=BackTranslationConfig(files=[tmp_path / "a.txt"]))
    with pytest.raises(ConfigError, match="data.augment.back_translation: set `model`"):
        augment_rows([], cfg, seed=0)


def test_paths_resolve_against_the_pipeline_file(tmp_path):
    from tuneforge.core.config import load_pipeline

    (tmp_path / "p.yaml").write_text("data:\n  augment:\n    enabled: true\n    back_translation:\n"
                                     "      files: [mono.fr.txt]\n      model: smollm2-135m\n")
    cfg = load_pipeline(tmp_path / "p.yaml")
    assert isinstance(cfg.data, DataConfig)
    assert cfg.data.augment.back_translation.files == [tmp_path / "mono.fr.txt"]


def test_a_prompt_template_drives_a_reverse_model():
    sent: list[str] = []

    def reverse_model(prompts: list[str]) -> list[str]:
        sent.extend(prompts)
        return ["Your order was shipped yesterday."]

    cfg = BackTranslationConfig(files=["m.txt"], model="m", prompt="<2en> {text}")
    made, _ = back_translation_rows([("m.txt:1", "Votre commande a été expédiée hier.")], reverse_model, cfg)
    assert sent == ["<2en> Votre commande a été expédiée hier."]
    assert made[0][1]["messages"][0]["content"] == "Your order was shipped yesterday."
    with pytest.raises(ValueError, match="no \\{text\\}"):
        BackTranslationConfig(files=["m.txt"], prompt="<2en>")


def test_a_round_trip_that_stays_in_the_pivot_language_is_dropped():
    """paraphrase.mode back_translation: the shipped 135M model often answers the way back in French."""
    from tuneforge.data.augment import paraphrase_rows

    rows = [{"messages": [{"role": "user", "content": "Your order has been shipped to your address."},
                          {"role": "assistant", "content": "ok"}]}] * 2
    answers = iter(["Votre commande a été expédiée.", "Votre commande a été expédiée à votre adresse.",
                    "Votre commande a été expédiée.", "Your order was sent to your address."])
    pairs = paraphrase_rows(rows, lambda prompts: [next(answers) for _ in prompts], "back_translation",
                            "French", "English")
    assert [v["messages"][0]["content"] for _, v in pairs] == ["Your order was sent to your address."]


def test_back_translated_rows_are_scrubbed_and_deduplicated_like_the_sources():
    from tuneforge.data.prepare import clean_outside_rows

    def row(user, answer, augmented=None):
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
                **({"meta": {"augmented": augmented}} if augmented else {})}

    source = row("Where is my order?", "Write to ana.lopez@example.org for help.")  # scrubbed before augmenting
    made = [row("Write to me at jo.martin@example.com", "Écrivez-moi à jo.martin@example.com", "back_translation"),
            row("Write to me at jo.martin@example.com", "Écrivez-moi à jo.martin@example.com", "back_translation")]
    rows, steps = clean_outside_rows([source, *made], DataConfig(files=["x.jsonl"]))
    assert rows[0] == source  # already cleaned by prepare's own steps: left as they are
    assert len(rows) == 2 and "jo.martin@example.com" not in json.dumps(rows[1])
    assert [s.step for s in steps] == ["dedup (back-translated)", "pii (back-translated)"]
    assert clean_outside_rows([source], DataConfig(files=["x.jsonl"])) == ([source], [])
