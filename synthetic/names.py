"""Synthetic name lists by heritage, nicknames and spelling variants.

These are lists of common given names and surnames written for this generator: no record of any real
person is used. Heritage groups carry the DfE ethnicity code given to a child of two parents of that
group and their share of families (roughly the make-up of English cities).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Heritage:
    key: str
    ethnicity: str  # DfE/CIN census ethnicity code
    share: float
    male: tuple[str, ...]
    female: tuple[str, ...]
    surnames: tuple[str, ...]


def _t(text: str) -> tuple[str, ...]:
    return tuple(text.split())


BRITISH = Heritage(
    "white-british", "WBRI", 0.60,
    _t("Oliver George Harry Jack Noah Leo Arthur Oscar Charlie Jacob Thomas William James Alfie Joshua "
       "Freddie Archie Henry Theo Alexander Samuel Joseph Benjamin Daniel Edward Lewis Max Ethan Mason Logan "
       "Dylan Riley Tyler Callum Kyle Liam Connor Jake Reece Ryan Matthew Christopher Michael Robert David "
       "Paul Mark Stephen Andrew Richard Anthony Jonathan Nicholas Frederick Theodore Gary Darren Wayne Lee"),
    _t("Olivia Amelia Isla Ava Mia Ivy Lily Isabella Rosie Sophia Grace Freya Evie Poppy Ella Emily Ruby "
       "Jessica Charlotte Elizabeth Katherine Rebecca Abigail Victoria Samantha Jennifer Hannah Chloe Megan "
       "Lauren Bethany Courtney Jade Kayleigh Leanne Stacey Natalie Sarah Emma Laura Amy Gemma Kirsty Donna "
       "Tracey Michelle Nicola Claire Lisa Kelly Margaret Eleanor Matilda Isabelle Zoe Leah Paige Holly"),
    _t("Smith Jones Taylor Brown Williams Wilson Johnson Davies Robinson Wright Thompson Evans Walker White "
       "Roberts Green Hall Wood Jackson Clarke Harris Lewis Clark Turner Hill Cooper Ward Morris Moore King "
       "Watson Baker Harrison Morgan Patel Young Allen Mitchell Bell Scott Cook Bailey Parker Kelly Richardson "
       "Collins Price Marshall Ellis Bennett Mason Shaw Lloyd Hughes Edwards Chapman Webb Rogers Gray Holmes "
       "Palmer Barnes Knight Lee Butler Russell Fisher Stevens Fletcher Hunt Dixon Ross Murphy Graham Pearson "
       "Cole Atkinson Ford Hudson Gibson Pickering Fairclough Ramsbottom Entwistle Hargreaves Sutcliffe "
       "Ackroyd Brierley Whitworth Greenhalgh Openshaw Kershaw Butterworth Haworth Tattersall Postlethwaite"),
)
IRISH = Heritage(
    "white-irish", "WIRI", 0.02,
    _t("Sean Conor Cian Oisin Patrick Declan Niall Ciaran Eoin Padraig Ronan Cormac Darragh Fionn Aidan"),
    _t("Aoife Niamh Siobhan Roisin Saoirse Ciara Orla Caoimhe Grainne Sinead Aisling Clodagh Maeve Eimear Shauna"),
    _t("Murphy Kelly O'Brien Byrne Ryan O'Sullivan Walsh O'Connor McCarthy Doyle Gallagher Doherty Kennedy Lynch "
       "Quinn Brennan Flanagan Gilmartin McLoughlin Nolan"),
)
EAST_EUROPEAN = Heritage(
    "eastern-european", "WOTH", 0.07,
    _t("Jakub Kacper Szymon Filip Mateusz Aleksander Piotr Tomasz Michał Łukasz Andrei Mihai Ionuț Vasile "
       "Darius Lukas Mantas Jonas Dmitri Oleksandr Nikola Marek Paweł Wojciech Bogdan Radu Tudor Adrian Kamil"),
    _t("Zuzanna Julia Maja Zofia Hanna Lena Katarzyna Małgorzata Agnieszka Magdalena Ioana Andreea Elena "
       "Alexandra Gabriela Ugnė Emilija Ieva Oksana Daria Anastasia Natalia Wiktoria Aleksandra Roxana Bianca"),
    _t("Nowak Kowalski Wiśniewski Wójcik Kowalczyk Kamiński Lewandowski Zieliński Szymański Woźniak Dąbrowski "
       "Popescu Ionescu Popa Dumitru Stoica Stan Constantin Kazlauskas Jankauskas Petrauskas Melnyk Shevchenko "
       "Kovalenko Horvath Novak Dvořák Kuznetsov Georgiev Dimitrov"),
)
ROMA = Heritage(
    "gypsy-roma", "WROM", 0.005,
    _t("Marius Florin Costel Ionel Gheorghe Nicu Sorin Robert Daniel Alin"),
    _t("Florentina Mirela Loredana Daniela Larisa Violeta Nicoleta Mariana Roxana Denisa"),
    _t("Lingurar Caldarar Rostas Lacatus Balog Kolompar Sarkozi Burtea Dobre Varga"),
)
PAKISTANI = Heritage(
    "pakistani", "APKN", 0.06,
    _t("Muhammad Mohammed Ali Hamza Ibrahim Yusuf Zain Ayaan Rayyan Hassan Hussain Imran Bilal Adnan Usman "
       "Zubair Tariq Asif Shahid Kamran Faisal Omar Haris Saad Zakariya Abdullah"),
    _t("Aisha Maryam Fatima Zainab Hafsa Inaya Amina Khadija Sana Ayesha Noor Hira Iqra Mehwish Saima "
       "Nadia Rabia Samina Shazia Farah Sadia Alisha Anaya Zara"),
    _t("Khan Hussain Ahmed Ali Akhtar Iqbal Mahmood Shah Butt Malik Rashid Aslam Javed Qureshi Chaudhry "
       "Anwar Bashir Raza Mirza Saleem Rehman Hameed Nawaz Riaz Zaman"),
)
INDIAN = Heritage(
    "indian", "AIND", 0.04,
    _t("Arjun Aarav Vihaan Krish Rohan Dev Aryan Ishaan Ravi Sanjay Rajesh Amit Vikram Harpreet Gurpreet "
       "Jaspal Manpreet Sukhdeep Nikhil Rahul Kiran Anand Deepak Suresh"),
    _t("Priya Anika Diya Aanya Saanvi Kavya Isha Nisha Pooja Anjali Sunita Meena Harleen Simran Navdeep "
       "Jaspreet Rajinder Kiran Neha Shreya Riya Tara Leela Asha"),
    _t("Patel Shah Singh Kaur Sharma Gupta Kumar Mistry Parmar Solanki Chauhan Joshi Mehta Desai Gill Sandhu "
       "Dhillon Sidhu Bains Johal Rai Nair Pillai Reddy Chopra"),
)
BANGLADESHI = Heritage(
    "bangladeshi", "ABAN", 0.02,
    _t("Mohammed Abdul Rahim Karim Sohel Shahid Jamal Rafiq Nazmul Tanvir Shakil Rubel Sajid Ayan Rayhan Arif"),
    _t("Fatema Nasima Rokeya Shirin Taslima Sumaiya Tahmina Jannat Nusrat Sabrina Farhana Rumana Salma Anika"),
    _t("Begum Uddin Miah Rahman Islam Choudhury Chowdhury Hossain Ahmed Ali Hoque Haque Khatun Karim Sarkar"),
)
AFRICAN = Heritage(
    "black-african", "BAFR", 0.05,
    _t("Oluwaseun Oluwatobi Adebayo Chukwuemeka Chinedu Tobenna Kwame Kofi Kwabena Yaw Emmanuel David "
       "Samuel Daniel Abdullahi Abdirahman Mohamed Ahmed Tendai Tafadzwa Ayodele Babatunde Ikenna Obinna Jamal"),
    _t("Oluwadamilare Oluwakemi Adaeze Chiamaka Ngozi Funmilayo Folake Abena Akosua Ama Esi Precious Blessing "
       "Favour Grace Deborah Faith Hodan Hibaaq Fadumo Amina Nyasha Rutendo Temitope Ifeoma Zainab"),
    _t("Okafor Okonkwo Adeyemi Adebayo Oyelaran Ogunleye Eze Nwosu Obi Mensah Boateng Asante Owusu Osei "
       "Appiah Addo Mohamed Ahmed Hassan Warsame Abdi Farah Moyo Ncube Dube Banda Mwangi Ochieng"),
)
CARIBBEAN = Heritage(
    "black-caribbean", "BCRB", 0.025,
    _t("Marcus Jerome Tyrone Dwayne Leon Andre Jermaine Delroy Winston Kemar Tyrese Isaiah Elijah Malachi "
       "Jaden Kai Devon Lloyd Trevor Nathaniel"),
    _t("Shanice Tanisha Keisha Latoya Monique Naomi Aaliyah Destiny Jada Kiara Shantelle Janelle Simone "
       "Marcia Beverley Hyacinth Tiana Imani Nia Amara"),
    _t("Campbell Brown Williams Thomas Edwards Grant Francis Johnson Clarke Henry Reid Gordon Lewis Morgan "
       "Richards Bailey Douglas Samuels Forbes McKenzie Simpson Bryan Chambers Barrett Blake"),
)
CHINESE = Heritage(
    "chinese", "CHNE", 0.01,
    _t("Wei Jun Hao Jian Ming Yang Chen Jia Yi Zhi Kai Lok Ho Chun Man"),
    _t("Mei Li Xin Yan Ling Hui Jing Ying Xiu Lan Wing Yan Ka Man Siu"),
    _t("Wang Li Zhang Liu Chen Yang Huang Zhao Wu Zhou Chan Wong Lam Cheung Leung Ng Lau Ho Tang Yip"),
)
OTHER = Heritage(
    "other", "OOTH", 0.02,
    _t("Ahmad Mustafa Karim Yousef Omar Khalid Rami Sami Nabil Tariq Hamid Amir Farid Reza Dariush"),
    _t("Layla Nour Rania Huda Yasmin Leila Dina Mariam Salma Hala Shirin Parisa Maryam Samira Reem"),
    _t("Al-Sayed Haddad Khalil Mansour Nasser Saleh Hamdan Rahimi Hosseini Karimi Ahmadi Mohammadi Aziz "
       "Darwish Jaber"),
)

HERITAGES: tuple[Heritage, ...] = (BRITISH, IRISH, EAST_EUROPEAN, ROMA, PAKISTANI, INDIAN, BANGLADESHI,
                                   AFRICAN, CARIBBEAN, CHINESE, OTHER)
BY_KEY = {h.key: h for h in HERITAGES}

# The DfE mixed-heritage code for a child of two parents of different groups.
_MIXED = {frozenset({"white-british", "black-caribbean"}): "MWBC",
          frozenset({"white-british", "black-african"}): "MWBA",
          frozenset({"white-british", "pakistani"}): "MWAS",
          frozenset({"white-british", "indian"}): "MWAS",
          frozenset({"white-british", "bangladeshi"}): "MWAS",
          frozenset({"white-british", "chinese"}): "MWAS"}


def child_ethnicity(mother: str, father: str | None) -> str:
    """DfE ethnicity code of a child from the heritage keys of the parents."""
    if father is None or father == mother:
        return BY_KEY[mother].ethnicity
    return _MIXED.get(frozenset({mother, father}), "MOTH")


# Known-as forms. Agencies that see the child or adult in person (police, schools) record these most.
NICKNAMES: dict[str, tuple[str, ...]] = {
    "Elizabeth": ("Liz", "Beth", "Lizzie", "Libby"), "Katherine": ("Kate", "Katie", "Kath"),
    "Rebecca": ("Becky", "Becca"), "Abigail": ("Abbie", "Abby"), "Victoria": ("Vicky", "Tori"),
    "Samantha": ("Sam", "Sammy"), "Jennifer": ("Jen", "Jenny"), "Jessica": ("Jess", "Jessie"),
    "Charlotte": ("Charlie", "Lottie"), "Isabella": ("Bella", "Izzy"), "Isabelle": ("Izzy", "Belle"),
    "Amelia": ("Millie", "Amy"), "Olivia": ("Liv", "Livvy"), "Margaret": ("Maggie", "Meg", "Peggy"),
    "Eleanor": ("Ellie", "Nell"), "Matilda": ("Tilly", "Tilda"), "Natalie": ("Nat",), "Nicola": ("Nicky",),
    "Michelle": ("Shell",), "Gemma": ("Gem",), "Bethany": ("Beth",), "Kayleigh": ("Kay",),
    "William": ("Will", "Billy", "Bill"), "Robert": ("Rob", "Bobby", "Bob"), "Thomas": ("Tom", "Tommy"),
    "James": ("Jamie", "Jim"), "Alexander": ("Alex", "Xander"), "Samuel": ("Sam", "Sammy"),
    "Benjamin": ("Ben", "Benji"), "Joseph": ("Joe", "Joey"), "Daniel": ("Dan", "Danny"),
    "Michael": ("Mike", "Mikey"), "Christopher": ("Chris",), "Matthew": ("Matt",), "Nicholas": ("Nick",),
    "Jonathan": ("Jon", "Jonny"), "Anthony": ("Tony", "Ant"), "Edward": ("Ed", "Eddie", "Ted"),
    "Frederick": ("Freddie", "Fred"), "Theodore": ("Theo", "Teddy"), "Joshua": ("Josh",),
    "Oliver": ("Ollie",), "Henry": ("Harry", "Hal"), "Andrew": ("Andy", "Drew"), "Richard": ("Rich", "Ricky"),
    "Stephen": ("Steve",), "Callum": ("Cal",), "Nathaniel": ("Nate", "Nat"), "Emmanuel": ("Manny",),
    "Muhammad": ("Mo",), "Mohammed": ("Mo",), "Mohamed": ("Mo",), "Abdullahi": ("Abdi",),
    "Oluwaseun": ("Seun",), "Oluwatobi": ("Tobi",), "Adebayo": ("Bayo",), "Chukwuemeka": ("Emeka",),
    "Oluwadamilare": ("Dami",), "Oluwakemi": ("Kemi",), "Funmilayo": ("Funmi",), "Temitope": ("Tope",),
    "Chiamaka": ("Amaka",), "Aleksander": ("Olek",), "Aleksandra": ("Ola",), "Katarzyna": ("Kasia",),
    "Małgorzata": ("Gosia",), "Magdalena": ("Magda",), "Wojciech": ("Wojtek",), "Alexandra": ("Alex",),
    "Anastasia": ("Nastya",), "Oleksandr": ("Sasha",), "Tafadzwa": ("Taffy",), "Babatunde": ("Tunde",),
    "Zakariya": ("Zak",), "Abdirahman": ("Abdi",), "Ibrahim": ("Ibby",),
}

# Spellings of one name that agencies swap freely (transliteration, mishearing).
_VARIANT_GROUPS = (
    ("Mohammed", "Muhammad", "Mohammad", "Mohamed", "Muhammed"), ("Katherine", "Catherine", "Kathryn"),
    ("Aisha", "Ayesha", "Aysha"), ("Hussain", "Hussein", "Husain"), ("Chaudhry", "Choudhury", "Chowdhury"),
    ("Stephen", "Steven"), ("Zoe", "Zoë", "Zoey"), ("Leanne", "Lianne"), ("Kayleigh", "Kayley", "Kaylee"),
    ("Jayden", "Jaden"), ("Isabelle", "Isabel", "Isobel"), ("Sophia", "Sofia"), ("Freya", "Freyja"),
    ("Rahman", "Rehman"), ("Hoque", "Haque"), ("Fatema", "Fatima"), ("Yusuf", "Yousuf", "Yousef"),
    ("Zainab", "Zaynab"), ("Ahmed", "Ahmad"), ("Hassan", "Hasan"), ("Siobhan", "Shivaun"),
    ("Niamh", "Neve"), ("Aoife", "Eva"), ("Sean", "Shaun", "Shawn"), ("Aidan", "Aiden"), ("Lewis", "Louis"),
    ("Jakub", "Jacob"), ("Michał", "Michal"), ("Łukasz", "Lukasz"), ("Paweł", "Pawel"),
    ("Wiśniewski", "Wisniewski"), ("Wójcik", "Wojcik"), ("Kamiński", "Kaminski"), ("Zieliński", "Zielinski"),
    ("Szymański", "Szymanski"), ("Woźniak", "Wozniak"), ("Dąbrowski", "Dabrowski"), ("Dvořák", "Dvorak"),
    ("Małgorzata", "Malgorzata"), ("Ionuț", "Ionut"), ("Ugnė", "Ugne"), ("O'Brien", "OBrien", "O Brien"),
    ("O'Sullivan", "OSullivan"), ("O'Connor", "OConnor"), ("McKenzie", "Mackenzie"), ("Jermaine", "Germaine"),
    ("Tyrese", "Tyreese"), ("Shanice", "Shaniece"), ("Kuznetsov", "Kuznetsova"), ("Melnyk", "Melnik"),
)
VARIANTS: dict[str, tuple[str, ...]] = {}
for _group in _VARIANT_GROUPS:
    for _name in _group:
        VARIANTS[_name] = tuple(n for n in _group if n != _name)
