"""Language detection on short queries of the kind msearch gets, and validation of --lang."""

import pytest

from msearch.search.language import (
    LANGUAGE_NAMES,
    SUPPORTED_LANGUAGES,
    UnsupportedLanguageError,
    detect_language,
    parse_language,
    unsupported_script,
)

# Short, natural queries about what Sentinel-2 shows, written per language (not translated word for word).
QUERIES: dict[str, list[str]] = {
    "en": [
        "flooded farmland",
        "dense pine forest",
        "river delta with sandbars",
        "snow covered mountains",
        "container harbour with ships",
        "solar farm in the desert",
        "city centre with tall buildings",
        "wildfire burn scar",
        "airport runway",
        "vineyards on hillsides",
        "wetlands near the coast",
        "open pit mine",
        "glacier",
        "clouds over the sea",
        "highway through farmland",
        "small village near a lake",
        "irrigated circular fields",
        "deforestation in the rainforest",
        "burned forest after wildfire",
        "frozen lake in winter",
        "suburban housing estate",
        "wind turbines offshore",
        "green fields next to a river",
        "industrial area with warehouses",
        "oil palm plantation",
        "meandering river",
        "terraced rice fields",
        "clear cut logging",
        "ships in a port",
        "snowy peaks",
        "beach resort",
        "lava flow",
        "flooded streets after a storm",
        "greenhouses",
        "sand dunes in the Sahara",
        "fishing ponds",
    ],
    "pt": [
        "terras agrícolas inundadas",
        "floresta tropical densa",
        "rio com bancos de areia",
        "montanhas cobertas de neve",
        "porto de contentores com navios",
        "parque solar no deserto",
        "centro da cidade com prédios altos",
        "área queimada por incêndio florestal",
        "pista do aeroporto",
        "vinhas nas encostas",
        "zonas húmidas perto da costa",
        "mina a céu aberto",
        "desmatamento na floresta amazônica",
        "plantação de cana-de-açúcar",
        "lago artificial de uma barragem",
        "floresta queimada após incêndio",
        "lago congelado no inverno",
        "bairro residencial nos subúrbios",
        "turbinas eólicas no mar",
        "campos verdes junto a um rio",
        "zona industrial com armazéns",
        "plantação de palmeiras",
        "rio sinuoso",
        "estufas de plástico",
        "navios num porto",
        "praia com hotéis",
        "ruas inundadas depois da tempestade",
    ],
    "es": [
        "campos de cultivo inundados",
        "bosque de pinos denso",
        "río con bancos de arena",
        "montañas cubiertas de nieve",
        "puerto de contenedores con barcos",
        "planta solar en el desierto",
        "centro de la ciudad con edificios altos",
        "zona quemada por un incendio forestal",
        "pista del aeropuerto",
        "viñedos en las laderas",
        "humedales cerca de la costa",
        "mina a cielo abierto",
        "invernaderos de plástico en Almería",
        "embalse con poca agua",
        "olivares en las colinas",
        "bosque quemado tras un incendio",
        "lago helado en invierno",
        "urbanización en las afueras",
        "aerogeneradores en el mar",
        "campos verdes junto a un río",
        "polígono industrial con naves",
        "plantación de palma",
        "río con meandros",
        "tala de árboles en la selva",
        "barcos en el puerto",
        "playa con hoteles",
        "calles inundadas tras la tormenta",
    ],
    "fr": [
        "terres agricoles inondées",
        "forêt de pins dense",
        "rivière avec des bancs de sable",
        "montagnes enneigées",
        "port à conteneurs avec des navires",
        "centrale solaire dans le désert",
        "centre-ville avec des immeubles",
        "zone brûlée par un incendie de forêt",
        "piste d'aéroport",
        "vignobles sur les coteaux",
        "zones humides près de la côte",
        "mine à ciel ouvert",
        "champs de blé en été",
        "glacier dans les Alpes",
        "quartier résidentiel en banlieue",
        "forêt brûlée après un incendie",
        "lac gelé en hiver",
        "lotissement en périphérie",
        "éoliennes en mer",
        "champs verts au bord d'une rivière",
        "zone industrielle avec entrepôts",
        "plantation de palmiers à huile",
        "rivière qui serpente",
        "rizières en terrasses",
        "bateaux dans un port",
        "plage avec des hôtels",
        "rues inondées après la tempête",
    ],
    "de": [
        "überflutetes Ackerland",
        "dichter Kiefernwald",
        "Fluss mit Sandbänken",
        "schneebedeckte Berge",
        "Containerhafen mit Schiffen",
        "Solarpark in der Wüste",
        "Stadtzentrum mit Hochhäusern",
        "Brandfläche nach einem Waldbrand",
        "Landebahn eines Flughafens",
        "Weinberge an den Hängen",
        "Feuchtgebiete an der Küste",
        "offener Tagebau mit Abraumhalden",
        "Gletscher in den Alpen",
        "Wohngebiet am Stadtrand",
        "Autobahn durch Felder",
        "verbrannter Wald nach einem Brand",
        "zugefrorener See im Winter",
        "Neubaugebiet am Stadtrand",
        "Windräder auf dem Meer",
        "grüne Felder an einem Fluss",
        "Industriegebiet mit Lagerhallen",
        "Ölpalmenplantage",
        "mäandrierender Fluss",
        "Reisterrassen",
        "Schiffe im Hafen",
        "Strand mit Hotels",
        "überschwemmte Straßen nach dem Sturm",
    ],
    "nl": [
        "overstroomde landbouwgrond",
        "dicht dennenbos",
        "rivier met zandbanken",
        "besneeuwde bergen",
        "containerhaven met schepen",
        "zonnepark in de woestijn",
        "stadscentrum met hoge gebouwen",
        "verbrand gebied na een bosbrand",
        "landingsbaan van een vliegveld",
        "wijngaarden op de hellingen",
        "moerasgebied langs de kust",
        "dagbouwmijn in het landschap",
        "tulpenvelden in de lente",
        "polders met sloten",
        "woonwijk aan de rand van de stad",
        "verbrand bos na een brand",
        "bevroren meer in de winter",
        "nieuwbouwwijk aan de rand van de stad",
        "windmolens op zee",
        "groene velden naast een rivier",
        "industrieterrein met loodsen",
        "palmolieplantage",
        "kronkelende rivier",
        "kassen in het Westland",
        "schepen in de haven",
        "strand met hotels",
        "ondergelopen straten na de storm",
    ],
    "it": [
        "terreni agricoli allagati",
        "bosco di pini fitto",
        "fiume con banchi di sabbia",
        "montagne innevate",
        "porto container con navi",
        "parco solare nel deserto",
        "centro città con edifici alti",
        "area bruciata da un incendio boschivo",
        "pista dell'aeroporto",
        "vigneti sulle colline",
        "zone umide vicino alla costa",
        "miniera a cielo aperto",
        "risaie nella pianura padana",
        "ghiacciaio nelle Alpi",
        "quartiere residenziale in periferia",
        "bosco bruciato dopo un incendio",
        "lago ghiacciato in inverno",
        "quartiere residenziale alla periferia",
        "pale eoliche in mare",
        "campi verdi accanto a un fiume",
        "zona industriale con capannoni",
        "piantagione di palme da olio",
        "fiume che serpeggia",
        "serre di plastica",
        "navi nel porto",
        "spiaggia con alberghi",
        "strade allagate dopo la tempesta",
    ],
    "zh": [
        "被淹没的农田",
        "茂密的松树林",
        "有沙洲的河流",
        "白雪覆盖的山脉",
        "停满船只的集装箱港口",
        "沙漠中的太阳能电站",
        "高楼林立的市中心",
        "森林火灾烧毁的区域",
        "机场跑道",
        "山坡上的葡萄园",
        "NDVI 很高的农田",
    ],
    "ko": [
        "침수된 농경지",
        "울창한 소나무 숲",
        "모래톱이 있는 강",
        "눈 덮인 산",
        "선박이 있는 컨테이너 항구",
        "사막의 태양광 발전소",
        "고층 건물이 있는 도심",
        "산불로 탄 지역",
        "공항 활주로",
        "언덕 위의 포도밭",
        "Sentinel-2 위성 영상의 논",
    ],
    "ru": [
        "затопленные сельхозугодья",
        "густой сосновый лес",
        "река с песчаными отмелями",
        "заснеженные горы",
        "контейнерный порт с кораблями",
        "солнечная электростанция в пустыне",
        "центр города с высотными зданиями",
        "выгоревший участок после лесного пожара",
        "взлётная полоса аэропорта",
        "виноградники на склонах",
        "поля рядом с Rotterdam",
    ],
}

LATIN_MIN_ACCURACY = 0.9


def test_every_supported_language_has_queries():
    assert set(QUERIES) == set(SUPPORTED_LANGUAGES)
    assert all(len(queries) >= 6 for queries in QUERIES.values())


@pytest.mark.parametrize("lang", ["zh", "ko", "ru"])
def test_non_latin_scripts_are_always_right(lang):
    assert [detect_language(q) for q in QUERIES[lang]] == [lang] * len(QUERIES[lang])


@pytest.mark.parametrize("lang", ["en", "pt", "es", "fr", "de", "nl", "it"])
def test_latin_script_languages_are_mostly_right(lang):
    wrong = {q: detected for q in QUERIES[lang] if (detected := detect_language(q)) != lang}
    accuracy = 1 - len(wrong) / len(QUERIES[lang])
    assert accuracy >= LATIN_MIN_ACCURACY, f"{lang}: {accuracy:.0%}, wrong: {wrong}"


@pytest.mark.parametrize("text", ["", "   ", "2023-06-01", "!!!", "B04 B03 B02"])
def test_text_without_words_of_a_language_is_english(text):
    assert detect_language(text) == "en"


@pytest.mark.parametrize("word", ["glacier", "delta", "port", "canal", "desert", "Rotterdam", "savanna"])
def test_words_shared_by_several_languages_resolve_to_english(word):
    assert detect_language(word) == "en"


@pytest.mark.parametrize(
    "text, script",
    [
        ("もり", "Japanese"),
        ("東京の港", "Japanese"),  # kana among kanji: Japanese, not Chinese
        ("ｶﾀｶﾅ", "Japanese"),  # half-width katakana
        ("غابة", "Arabic"),
        ("حقول مغمورة", "Arabic"),
        ("ελαιώνες στην Κρήτη", "Greek"),
        ("יער", "Hebrew"),
        ("जंगल", "Devanagari"),
        ("ป่าไม้", "Thai"),
        ("NDVI غابة كثيفة", "Arabic"),  # a Latin acronym does not make it a Latin-script query
    ],
)
def test_scripts_of_no_supported_language_are_refused_naming_the_script_and_the_ten(text, script):
    assert unsupported_script(text) == script
    with pytest.raises(UnsupportedLanguageError) as error:
        detect_language(text)
    message = str(error.value)
    assert f"written in {script}" in message and "--lang CODE" in message
    assert all(f"{code} ({LANGUAGE_NAMES[code]})" in message for code in SUPPORTED_LANGUAGES)


@pytest.mark.parametrize(
    "text", ["森林", "NDVI 高的农田", "лес", "숲", "α forest", "skog ved en innsjø", "B04 B03 B02"]
)
def test_supported_scripts_and_stray_letters_are_not_refused(text):
    assert unsupported_script(text) is None
    assert detect_language(text) in SUPPORTED_LANGUAGES


@pytest.mark.parametrize("given, expected", [("auto", "auto"), ("EN", "en"), (" pt ", "pt"), ("zh", "zh")])
def test_parse_language_accepts_auto_and_supported_codes(given, expected):
    assert parse_language(given) == expected


@pytest.mark.parametrize("given", ["ja", "english", "pt-BR", ""])
def test_parse_language_names_the_supported_codes_when_rejecting(given):
    with pytest.raises(ValueError) as error:
        parse_language(given)
    message = str(error.value)
    assert repr(given) in message
    assert "auto" in message
    assert all(code in message for code in SUPPORTED_LANGUAGES)


def test_the_language_model_read_from_msearchs_cache_scores_exactly_as_the_packaged_one(tmp_path, monkeypatch):
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from msearch.search import language

    monkeypatch.setenv("MSEARCH_CACHE", str(tmp_path))
    packaged = LanguageIdentifier.from_model_file(MODEL_FILE)
    first = language._identifier_from_cache()  # writes the uncompressed copy
    copies = list((tmp_path / "langid").iterdir())
    assert len(copies) == 1 and copies[0].stat().st_size > 10 * 2**20
    second = language._identifier_from_cache()  # reads it
    for identifier in (first, second, packaged):
        identifier.set_languages(list(language.LATIN_SCRIPT_LANGUAGES))
    for text in [q for queries in QUERIES.values() for q in queries]:
        assert first.rank(text) == second.rank(text) == packaged.rank(text)

    copies[0].write_bytes(b"not a model")  # a damaged copy is not used
    assert language._identifier_from_cache() is None
