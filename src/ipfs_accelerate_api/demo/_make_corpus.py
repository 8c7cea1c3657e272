"""Makes the demo's bundled corpus, ``corpus.txt.gz`` beside this file: 20,000 distinct
short texts of a dozen kinds (product reviews, support tickets, headlines, recipe steps,
commit messages, questions, weather reports, travel notes, chat messages, log lines, book
blurbs, meeting notes), synthetic and so free of any licence, from a seeded generator.

Not used at run time (the demo reads the file); run it to remake the file, byte for byte:

    python -m ipfs_accelerate_api.demo._make_corpus
"""

from __future__ import annotations

import gzip
import io
import os
import random
from collections.abc import Callable

LINES = 20_000
SEED = 20_240_601


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split("|")]


PRODUCTS = _words(
    "pair of wireless earbuds|standing desk|espresso machine|pair of trail shoes|robot vacuum|"
    "mechanical keyboard|air fryer|e-reader|camping stove|4K monitor|electric toothbrush|"
    "rice cooker|noise-cancelling headset|cast iron skillet|smart thermostat|yoga mat|"
    "portable charger|office chair|blender|hiking backpack|webcam|drip coffee maker|"
    "sleeping bag|gaming mouse|bluetooth speaker|water filter pitcher|laptop stand|"
    "kitchen scale|dash cam|fitness tracker|tent|pressure cooker|desk lamp|phone case|"
    "electric kettle|rain jacket|router|dehumidifier|stand mixer|bike helmet")
PRAISE = _words(
    "works exactly as described|was easy to set up|feels solid and well made|"
    "exceeded my expectations|is quieter than I expected|has held up after months of daily use|"
    "was worth every penny|is much better than my old one|arrived well packed and a day early|"
    "does one thing and does it well")
COMPLAINT = _words(
    "stopped working after two weeks|is louder than the listing suggests|"
    "came with a missing screw|has a battery that barely lasts a day|"
    "feels cheaper than the photos|needed a firmware update before it would pair|"
    "is too small for anything but a studio flat|smells of plastic for the first few days|"
    "has buttons that are hard to find in the dark|was returned within the week")
DETAIL = _words(
    "the instructions could be clearer|customer service replied within a day|"
    "I would buy it again|my partner uses it more than I do|the colour is slightly off|"
    "it fits in a carry-on|cleaning takes about two minutes|the app is optional, thankfully|"
    "the cable is on the short side|it replaced two other gadgets on my counter|"
    "the price dropped a week after I ordered|setup took under ten minutes")
STARS = _words("1 star|2 stars|3 stars|4 stars|5 stars")

APPS = _words(
    "the mobile app|the web dashboard|the desktop client|the browser extension|the API|"
    "the checkout page|the admin console|the sync service|the billing portal|the login page")
SYMPTOMS = _words(
    "crashes on launch|shows a blank screen|logs me out every few minutes|"
    "rejects my password even after a reset|times out when uploading files over 100 MB|"
    "charges my card twice|will not load my order history|freezes when I switch accounts|"
    "sends notifications hours late|returns error 502 intermittently|"
    "displays prices in the wrong currency|drops the last row of exported CSV files")
CONTEXT = _words(
    "since yesterday's update|on Android 14|on an iPhone 13|in Safari only|"
    "behind our company proxy|after I changed my email address|for users in Brazil|"
    "only on the shared team account|when the network is slow|on a fresh install")
ASKS = _words(
    "Please advise.|Is there a workaround?|This is blocking our release.|"
    "Ticket priority: high.|Happy to share logs.|Screenshots attached.|"
    "Any update would be appreciated.|Can someone look at this today?")

ORGS = _words(
    "City council|Regional transit authority|National weather service|Central bank|"
    "University research team|Health ministry|Farmers' union|Port authority|Tech startup|"
    "Hospital network|School board|Energy regulator|Space agency|Museum board|"
    "Fishing cooperative|Housing association")
ACTIONS = _words(
    "approves|delays|announces|rejects|expands|reviews|launches|cuts funding for|"
    "warns about|unveils plans for|opens an inquiry into|signs an agreement on")
TOPICS = _words(
    "new cycle lanes|a rate cut|flood defences|a four-day week pilot|a rooftop solar scheme|"
    "late-night bus routes|a heat warning|a river clean-up|free school meals|"
    "a satellite launch|a ban on single-use plastics|a downtown stadium|rent controls|"
    "a vaccine trial|a wind farm offshore|the library's opening hours")
PLACES = _words(
    "Lisbon|Osaka|Nairobi|Toronto|Melbourne|Bergen|Valparaíso|Kraków|Hanoi|Austin|"
    "Marseille|Cork|Tbilisi|Montevideo|Leipzig|Chennai|Quebec City|Bilbao|Da Nang|Accra")

#: cooking method -> (what it applies to, how)
RECIPES = {
    "Simmer": (_words("the lentils|the chickpeas|the tomato sauce|the stock|the beans"),
               _words("over a low heat|uncovered|with the lid on|gently")),
    "Roast": (_words("the potatoes|the chicken thighs|the squash|the carrots|the almonds"),
              _words("until golden|in a hot oven|on the top shelf|with a drizzle of oil")),
    "Sauté": (_words("the onions|the garlic|the mushrooms|the spinach|the peppers"),
              _words("in a hot pan|until fragrant|until soft|in batches")),
    "Whisk": (_words("the eggs and sugar|the cream|the egg whites|the dressing"),
              _words("until pale|until stiff peaks form|until smooth|vigorously")),
    "Knead": (_words("the dough|the pasta dough|the bread dough"),
              _words("on a floured surface|until smooth and elastic|by hand")),
    "Marinate": (_words("the salmon|the tofu|the chicken thighs|the lamb"),
                 _words("in the fridge|with the lemon and herbs|covered")),
    "Steam": (_words("the rice|the broccoli|the dumplings|the green beans"),
              _words("with the lid on|over boiling water|until just tender")),
    "Grill": (_words("the halloumi|the peppers|the sardines|the corn"),
              _words("over a high heat|until charred|turning once")),
}
THEN = _words(
    "set aside to cool|season to taste|add the stock|scatter over the herbs|"
    "drain well|squeeze over half a lemon|transfer to a warm plate|"
    "let it rest before slicing|stir in the cream|top with grated cheese")

COMPONENTS = _words(
    "parser|auth|cache|scheduler|cli|retry|billing|search|exporter|migrations|logging|"
    "uploader|rate limiter|config|websocket")
#: (conventional-commit kind, change)
CHANGES = (
    ("fix", "handle empty input without crashing"), ("fix", "stop leaking file handles on error"),
    ("fix", "retry on connection reset"), ("fix", "avoid a race when two workers start at once"),
    ("fix", "normalise line endings before hashing"), ("feat", "add a --dry-run flag"),
    ("feat", "make the timeout configurable"), ("feat", "log the request id on failure"),
    ("refactor", "split the monolithic module in two"),
    ("refactor", "remove the deprecated v1 endpoint"), ("perf", "cache compiled templates"),
    ("perf", "reduce memory use for large batches"), ("docs", "document the environment variables"),
    ("test", "skip the flaky network test on CI"), ("build", "pin the TLS version"),
    ("chore", "bump dependencies"),
)

QUESTIONS = _words(
    "How do I reset my password|Can I change the delivery address after ordering|"
    "What is the return policy for opened items|Why was my payment declined|"
    "How long does shipping take|Is there a student discount|"
    "Can I pause my subscription|How do I export my data|"
    "Does the warranty cover accidental damage|How do I add a second user|"
    "Where can I find my invoice|Can I use the app offline")
QUALIFIERS = _words(
    "on the iPad app|for a business account|if I paid with a gift card|"
    "from outside the EU|before the order ships|without losing my history|"
    "after the trial ends|for an order placed last month|on a shared device|"
    "if I signed up through a partner")

GREETINGS = ["", "", "Hi, ", "Quick question: ", "Hello team, ", "Sorry if this was asked before: "]
SIGN_OFFS = ["", "", "Thanks.", "Thanks in advance!", "Cheers."]

CONDITIONS = _words(
    "Sunny|Light rain|Overcast|Thunderstorms|Fog in the morning, clearing later|"
    "Scattered showers|Snow flurries|Clear skies|Strong winds|Humid and hazy|Drizzle")
DIRECTIONS = _words("north|north-east|east|south-east|south|south-west|west|north-west")

TRAVEL = _words(
    "The night train was on time and the couchette was cleaner than expected|"
    "The old town is best explored on foot before the tour groups arrive|"
    "Buy the weekly transit pass; it pays for itself in three days|"
    "The ferry was cancelled because of the wind, so we took the coastal bus|"
    "Most restaurants close between lunch and dinner, so plan ahead|"
    "The museum is free on the first Sunday of the month|"
    "Our hostel had lockers but bring your own padlock|"
    "The hike to the viewpoint took two hours and the last part is steep|"
    "Card is accepted almost everywhere, but markets prefer cash|"
    "The airport shuttle leaves every twenty minutes from stop B")
TRAVEL_TAIL = _words(
    "Highly recommended.|Would skip next time.|Go early.|Bring water.|"
    "Worth the detour.|Book a week ahead.|Check the timetable first.|Pack a layer.")

CHAT_TEMPLATES = (
    "Hey, are we still on for {event} {day}?", "Quick reminder: {event} is {day}, same room.",
    "Can you send me the notes from {event}? No rush.",
    "Running ten minutes late for {event}, start without me.",
    "Did anyone book a room for {event} {day}?", "Loved your slides at {event}, can you share the deck?",
    "Who is covering {event} {day} while {owner} is away?",
    "Can we move {event} {day} to the afternoon? 🙂",
)
CHAT_EVENTS = _words(
    "the standup|the planning session|the client call|the offsite|"
    "the design review|lunch with the new hires|the quarterly review|the demo day")
DAYS = _words("today|tomorrow|on Monday|on Tuesday|on Wednesday|on Thursday|on Friday|next week")

LEVELS = _words("INFO|WARN|ERROR|DEBUG")
SERVICES = _words("api-gateway|payments|worker-3|auth-service|indexer|scheduler|cdn-edge")
EVENTS = _words(
    "request completed|upstream timed out after 30s|retrying job|cache miss for key|"
    "connection pool exhausted|user signed in|webhook delivered|disk usage above 85%|"
    "certificate expires in 14 days|rate limit exceeded for client")

GENRES = _words(
    "A slow-burning mystery|A warm family saga|A sharp workplace comedy|"
    "A near-future thriller|A quiet coming-of-age story|A sweeping historical novel|"
    "A witty travel memoir|A tense courtroom drama")
PLOTS = _words(
    "about a lighthouse keeper who finds a letter addressed to her late mother|"
    "following three sisters who inherit a failing vineyard|"
    "in which a junior analyst uncovers a fraud at her own bank|"
    "about a chess prodigy who refuses to play in public|"
    "about the crew of a research station cut off by a winter storm|"
    "about a translator caught between two rival delegations|"
    "following a retired detective who takes one last case|"
    "about a baker who swaps lives with a stranger for a summer")

MEETING = _words(
    "Agreed to ship the beta to ten pilot customers|Decided to postpone the migration|"
    "Budget for the next quarter approved with one change|"
    "Hiring freeze lifted for the support team|"
    "Action: update the onboarding guide|Risk: the vendor contract ends in March|"
    "Open question: who owns the analytics dashboard|"
    "Customer churn fell for the second month running")
ERAS = _words("present-day|1970s|post-war|Victorian-era|1990s|near-future|medieval")
MONTHS = _words("January|February|March|April|May|June|July|August|September|October|"
                "November|December")
OWNERS = _words("Priya|Marco|Aiko|Sam|Fatima|Lars|Chen|Olu|Inés|Dmitri")


def _review(r: random.Random) -> str:
    good = r.random() < 0.6
    body = r.choice(PRAISE if good else COMPLAINT)
    return (f"{r.choice(STARS[3:] if good else STARS[:3])}: the {r.choice(PRODUCTS)} {body}; "
            f"{r.choice(DETAIL)}.")


def _ticket(r: random.Random) -> str:
    app = r.choice(APPS)
    return (f"{app[0].upper()}{app[1:]} {r.choice(SYMPTOMS)} {r.choice(CONTEXT)}. "
            f"{r.choice(ASKS)}")


def _headline(r: random.Random) -> str:
    return f"{r.choice(ORGS)} {r.choice(ACTIONS)} {r.choice(TOPICS)} in {r.choice(PLACES)}"


def _recipe(r: random.Random) -> str:
    method = r.choice(sorted(RECIPES))
    what, how = RECIPES[method]
    return (f"{method} {r.choice(what)} {r.choice(how)} for {r.randint(2, 25)} minutes, "
            f"then {r.choice(THEN)}.")


def _commit(r: random.Random) -> str:
    ref = f" (#{r.randint(100, 4999)})" if r.random() < 0.7 else ""
    kind, change = r.choice(CHANGES)
    return f"{kind}({r.choice(COMPONENTS)}): {change}{ref}"


def _question(r: random.Random) -> str:
    greeting, question = r.choice(GREETINGS), r.choice(QUESTIONS)
    if greeting.endswith(", "):
        question = question[0].lower() + question[1:]
    return f"{greeting}{question} {r.choice(QUALIFIERS)}? {r.choice(SIGN_OFFS)}".rstrip()


def _weather(r: random.Random) -> str:
    return (f"{r.choice(PLACES)}: {r.choice(CONDITIONS)}, high of {r.randint(-8, 38)}°C, "
            f"winds {r.choice(DIRECTIONS)} at {r.randint(3, 60)} km/h.")


def _travel(r: random.Random) -> str:
    return (f"Day {r.randint(1, 14)}, {r.choice(PLACES)}: {r.choice(TRAVEL)}. "
            f"{r.choice(TRAVEL_TAIL)}")


def _chat(r: random.Random) -> str:
    return r.choice(CHAT_TEMPLATES).format(event=r.choice(CHAT_EVENTS), day=r.choice(DAYS),
                                          owner=r.choice(OWNERS))


def _log(r: random.Random) -> str:
    return (f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:"
            f"{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z {r.choice(LEVELS)} "
            f"{r.choice(SERVICES)} {r.choice(EVENTS)} (req {r.getrandbits(32):08x})")


def _blurb(r: random.Random) -> str:
    return f"{r.choice(GENRES)}, set in {r.choice(ERAS)} {r.choice(PLACES)}, {r.choice(PLOTS)}."


def _meeting(r: random.Random) -> str:
    return (f"{r.choice(MEETING)} (owner: {r.choice(OWNERS)}, due {r.randint(1, 28)} "
            f"{r.choice(MONTHS)}).")


#: Each kind with its weight (share of the lines, roughly).
KINDS: tuple[tuple[Callable[[random.Random], str], int], ...] = (
    (_review, 16), (_ticket, 12), (_headline, 10), (_recipe, 8), (_commit, 8),
    (_question, 8), (_weather, 7), (_travel, 6), (_chat, 6), (_log, 7), (_blurb, 5),
    (_meeting, 7),
)


def lines(n: int = LINES, seed: int = SEED) -> list[str]:
    """``n`` distinct lines, the same ones for the same seed."""
    r = random.Random(seed)
    makers = [m for m, _ in KINDS]
    weights = [w for _, w in KINDS]
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        line = r.choices(makers, weights)[0](r)
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


def write(path: str, n: int = LINES, seed: int = SEED) -> None:
    """The corpus, gzip-compressed with no timestamp or name, so the bytes repeat."""
    data = ("\n".join(lines(n, seed)) + "\n").encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


if __name__ == "__main__":
    target = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus.txt.gz")
    write(target)
    print(f"wrote {LINES} lines to {target} ({os.path.getsize(target)} bytes)")
