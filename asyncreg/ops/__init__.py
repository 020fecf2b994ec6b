"""Operations built on the copy engine: export to a tar, import from one."""
