"""Base models shared by everything read from a lesson file.

``StrictModel`` makes unknown keys errors (a typo must not pass silently);
``LocalizedText`` is a text given in both languages of the course.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from kubelab.i18n import LANGS, Lang


class StrictModel(BaseModel):
    """Base of every model read from a lesson file: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalizedText(StrictModel):
    """A text in Brazilian Portuguese and English (both required, neither empty)."""

    pt: str
    en: str

    @model_validator(mode="before")
    @classmethod
    def _both_languages(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("expected a text per language: {pt: ..., en: ...}")
        if isinstance(value, dict):
            missing = [lang for lang in LANGS if not str(value.get(lang) or "").strip()]
            if missing:
                raise ValueError(
                    f"missing translation: {', '.join(missing)} (every text needs pt and en)"
                )
        return value

    def get(self, lang: Lang) -> str:
        return self.pt if lang == "pt" else self.en
