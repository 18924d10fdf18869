"""``python -m persistence.queries``: print every statement the library runs."""

from persistence.queries import event_store, statements

for name, statement in {**statements(), **event_store.statements()}.items():
    print(f"-- {name}\n{statement};\n")
