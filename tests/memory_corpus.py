"""A labelled set for memory search: an agent's memories about its user's life and work, and questions each of
which one memory answers. Written for these tests (and reused by benchmarks/memory.py).

``TARGETS`` pairs each answering memory with its question, worded differently from it (synonyms, another
angle), so that the search must match meaning, not only words. ``distractors()`` adds memories on the same
topics about other people, places and things — many share words and shape with a target — so that a question
has near misses to beat. Everything is deterministic.
"""

from __future__ import annotations

import itertools

# (memory, the question it answers)
TARGETS: list[tuple[str, str]] = [
    ("Priya's birthday is on March 14; she loves orchids.", "When does Priya celebrate her birthday?"),
    ("The wifi password at the cabin is bluefinch42.", "What's the network key for the internet at the cabin?"),
    ("Dr. Okafor is my dentist; his office is on Elm Street.", "Who takes care of my teeth?"),
    ("I parked the car on level 3 of the airport garage, row G.", "Where did I leave my vehicle at the airport?"),
    ("Max the golden retriever is allergic to chicken.", "What food makes the dog sick?"),
    ("The quarterly budget review moved to Thursday at 3pm.", "When is the meeting about finances this quarter?"),
    ("Grandma's lasagna recipe uses ricotta, nutmeg and fresh basil.", "Which ingredients go into the pasta bake "
     "my grandmother makes?"),
    ("My passport expires in August 2027.", "When do I need to renew my travel document?"),
    ("Tomas prefers window seats on long flights.", "Where does Tomas like to sit on a plane?"),
    ("The spare house key is under the blue flower pot by the back door.", "Where is the extra key to get "
     "into the house?"),
    ("Lena is vegetarian and doesn't eat fish either.", "What can't Lena eat?"),
    ("The printer on the second floor jams when printing double-sided.", "Which office device keeps getting "
     "stuck with two-sided pages?"),
    ("Our anniversary dinner is booked at Casa Lumi for June 9 at 8pm.", "Where are we celebrating our "
     "anniversary?"),
    ("I started taking vitamin D every morning in November.", "Which supplement do I take each day?"),
    ("The garage door opener code is 7319.", "What number opens the garage?"),
    ("Kenji's daughter Aiko starts kindergarten in September.", "When does Kenji's child begin school?"),
    ("The electricity bill is due on the 21st of each month.", "What day must the power company be paid?"),
    ("I lent my camping stove to Marcus last spring.", "Who borrowed my gear for cooking outdoors?"),
    ("The project Helios deadline is the end of October.", "By when must Helios be finished?"),
    ("My blood type is O negative.", "Which blood group do I have?"),
    ("Sofia recommended the novel 'The Salt Road' to me.", "Which book did Sofia suggest I read?"),
    ("The car's next oil change is due at 48,000 miles.", "When does the vehicle need new engine oil?"),
    ("I am allergic to penicillin.", "Which antibiotic must I avoid?"),
    ("Ravi's flight from Mumbai lands at 6:40am on Friday.", "What time does Ravi arrive from India?"),
    ("The team standup is every weekday at 9:15 in room Atlas.", "When and where is the daily team meeting?"),
    ("My gym locker combination is 12-38-05.", "How do I open my locker at the fitness center?"),
    ("Aunt Rosa sends a fruitcake every Christmas.", "Who mails us a cake in December?"),
    ("The landlord, Mr. Haddad, wants two months' notice before we move out.", "How much warning does the "
     "property owner need before we leave the apartment?"),
    ("I planted tulip bulbs along the front fence in October.", "What did I put in the garden by the fence?"),
    ("Julia's cat Pepper needs insulin shots twice a day.", "Which pet requires diabetes medicine?"),
    ("The conference in Vienna runs from May 5 to May 8.", "When is the event in Austria?"),
    ("I pay 45 dollars a month for the climbing gym membership.", "How much does bouldering cost me?"),
    ("My bike was repaired at Spoke & Chain for 60 dollars.", "Which shop fixed my bicycle?"),
    ("Noah is learning the cello and practices on Tuesdays.", "What instrument does Noah play?"),
    ("The backup drive is in the top drawer of my desk.", "Where do I keep the external disk with the backups?"),
    ("I want to visit Kyoto to see the cherry blossoms in April.", "Which trip am I dreaming of for spring?"),
    ("Elena's wedding is on September 20 in Porto.", "When and where is Elena getting married?"),
    ("The new hire, Dana, starts on Monday in the design team.", "Who is joining the designers next week?"),
    ("I owe Felix 30 dollars for the concert tickets.", "How much money do I need to pay back to Felix?"),
    ("The dishwasher's filter must be cleaned every month.", "How often should the kitchen appliance filter "
     "be washed?"),
]

_PEOPLE = ["Amara", "Bruno", "Chloe", "Diego", "Esther", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Keira", "Liam",
           "Maya", "Nils", "Olga", "Pablo", "Quinn", "Rhea", "Sami", "Tessa"]
_PLACES = ["Lisbon", "Oslo", "Denver", "Hanoi", "Cairo", "Quebec", "Seville", "Perth", "Zurich", "Lima"]
_MONTHS = ["January", "February", "April", "May", "July", "October", "November", "December"]
_THINGS = ["umbrella", "tent", "ladder", "drill", "projector", "kayak", "sewing machine", "telescope"]
_FOODS = ["peanuts", "shellfish", "gluten", "dairy", "eggs", "soy"]
_TEMPLATES = [
    "{person}'s birthday is on {month} {day}.",
    "{person} moved to {place} last {month}.",
    "I borrowed a {thing} from {person}.",
    "{person} is allergic to {food}.",
    "The meeting with {person} about the {place} office is on {month} {day}.",
    "{person} recommended a restaurant in {place}.",
    "My flight to {place} leaves on {month} {day}.",
    "{person} keeps the {thing} in the basement.",
    "{person}'s phone number ends in {day}{day}.",
    "I need to buy a new {thing} before {month}.",
    "{person} works as a nurse in {place}.",
    "The {thing} warranty ends in {month}.",
]


def distractors(count: int = 320) -> list[str]:
    """``count`` distinct memories, each from a template (person × template, then the details vary by round)."""
    memories: dict[str, None] = {}
    for n, (shift, person, template) in enumerate(itertools.product(range(40), _PEOPLE, _TEMPLATES)):
        if len(memories) == count:
            break
        memories.setdefault(template.format(
            person=person, place=_PLACES[(n + shift) % len(_PLACES)], month=_MONTHS[(n * 3 + shift) % len(_MONTHS)],
            day=(n * 7 + shift) % 28 + 1, thing=_THINGS[(n + 3 * shift) % len(_THINGS)],
            food=_FOODS[(n + shift) % len(_FOODS)]))
    assert len(memories) == count, "the templates cannot make that many distinct memories"
    return list(memories)


def corpus(count: int = 320) -> list[str]:
    """The targets and ``count`` distractors, interleaved so that targets are not all first."""
    others = distractors(count)
    step = max(1, len(others) // len(TARGETS))
    memories: list[str] = []
    for i, (target, _) in enumerate(TARGETS):
        memories.extend(others[i * step:(i + 1) * step])
        memories.append(target)
    memories.extend(others[len(TARGETS) * step:])
    return memories
