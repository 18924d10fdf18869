"""``python -m persistence.queries``: print every statement the library runs."""

from persistence.queries import statements

for name, statement in statements().items():
    print(f"-- {name}\n{statement};\n")
