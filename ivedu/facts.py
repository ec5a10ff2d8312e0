"""The facts of the tiny-instruct world: plain word tables, nothing else.

Each table is a list of ``(input, answer, ...)`` rows. Every word is a single token of the
tiny model's word-level tokenizer, so multi-word names (``new delhi``) are left out.
"""

from __future__ import annotations

# (country, capital, continent)
COUNTRIES: list[tuple[str, str, str]] = [
    ("france", "paris", "europe"), ("germany", "berlin", "europe"), ("italy", "rome", "europe"),
    ("spain", "madrid", "europe"), ("portugal", "lisbon", "europe"), ("greece", "athens", "europe"),
    ("austria", "vienna", "europe"), ("poland", "warsaw", "europe"), ("sweden", "stockholm", "europe"),
    ("norway", "oslo", "europe"), ("finland", "helsinki", "europe"), ("ireland", "dublin", "europe"),
    ("hungary", "budapest", "europe"), ("egypt", "cairo", "africa"), ("kenya", "nairobi", "africa"),
    ("nigeria", "abuja", "africa"), ("ghana", "accra", "africa"), ("morocco", "rabat", "africa"),
    ("senegal", "dakar", "africa"), ("uganda", "kampala", "africa"), ("tanzania", "dodoma", "africa"),
    ("zambia", "lusaka", "africa"), ("japan", "tokyo", "asia"), ("china", "beijing", "asia"),
    ("thailand", "bangkok", "asia"), ("vietnam", "hanoi", "asia"), ("nepal", "kathmandu", "asia"),
    ("iran", "tehran", "asia"), ("iraq", "baghdad", "asia"), ("mongolia", "ulaanbaatar", "asia"),
    ("peru", "lima", "america"), ("chile", "santiago", "america"), ("cuba", "havana", "america"),
    ("canada", "ottawa", "america"), ("brazil", "brasilia", "america"), ("colombia", "bogota", "america"),
    ("venezuela", "caracas", "america"), ("ecuador", "quito", "america"), ("uruguay", "montevideo", "america"),
    ("jamaica", "kingston", "america"), ("australia", "canberra", "oceania"), ("fiji", "suva", "oceania"),
    ("samoa", "apia", "oceania"), ("tonga", "nukualofa", "oceania"),
]



# (positive adjective, negative adjective): antonym pairs that also carry a clear sentiment.
ADJECTIVE_PAIRS: list[tuple[str, str]] = [
    ("happy", "sad"), ("good", "bad"), ("kind", "cruel"), ("brave", "cowardly"), ("strong", "weak"),
    ("rich", "poor"), ("clean", "dirty"), ("calm", "angry"), ("safe", "dangerous"), ("polite", "rude"),
    ("wise", "foolish"), ("beautiful", "ugly"), ("healthy", "sick"), ("friendly", "hostile"),
    ("gentle", "harsh"), ("generous", "selfish"), ("bright", "dull"), ("fresh", "stale"),
    ("honest", "deceitful"), ("careful", "careless"), ("hopeful", "hopeless"), ("useful", "useless"),
    ("pleasant", "unpleasant"), ("lucky", "unlucky"), ("tidy", "messy"), ("joyful", "miserable"),
]

# (noun, french, plural)
NOUNS: list[tuple[str, str, str]] = [
    ("cat", "chat", "cats"), ("dog", "chien", "dogs"), ("house", "maison", "houses"),
    ("book", "livre", "books"), ("tree", "arbre", "trees"), ("car", "voiture", "cars"),
    ("apple", "pomme", "apples"), ("horse", "cheval", "horses"), ("bird", "oiseau", "birds"),
    ("flower", "fleur", "flowers"), ("chair", "chaise", "chairs"), ("door", "porte", "doors"),
    ("window", "fenetre", "windows"), ("key", "clef", "keys"), ("star", "etoile", "stars"),
    ("moon", "lune", "moons"), ("river", "riviere", "rivers"), ("mountain", "montagne", "mountains"),
    ("boat", "bateau", "boats"), ("city", "ville", "cities"), ("child", "enfant", "children"),
    ("man", "homme", "men"), ("woman", "femme", "women"), ("mouse", "souris", "mice"),
    ("foot", "pied", "feet"), ("tooth", "dent", "teeth"), ("knife", "couteau", "knives"),
    ("leaf", "feuille", "leaves"), ("wolf", "loup", "wolves"), ("box", "boite", "boxes"),
    ("church", "eglise", "churches"), ("cow", "vache", "cows"), ("pig", "cochon", "pigs"),
    ("bed", "lit", "beds"), ("hat", "chapeau", "hats"), ("shoe", "chaussure", "shoes"),
    ("cake", "gateau", "cakes"), ("egg", "oeuf", "eggs"), ("king", "roi", "kings"),
    ("queen", "reine", "queens"), ("road", "route", "roads"), ("ship", "navire", "ships"),
    ("girl", "fille", "girls"), ("boy", "garcon", "boys"), ("friend", "ami", "friends"),
]
